//! `auth enable|disable|status`, `user ...` and `role ...`: etcd's Auth API, printed as
//! etcdctl's simple printer prints it. synodctl never prompts: a password comes after a
//! colon (`user add alice:secret`), from `--new-user-password`, or as a line on stdin.

use synod_api::EtcdError;
use synod_api::authpb::permission::Type as PermType;
use synod_api::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGetRequest,
    AuthRoleGetResponse, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGetRequest, AuthUserGrantRoleRequest, AuthUserListRequest,
    AuthUserRevokeRoleRequest,
};

use super::Context;
use crate::cli::{AuthCommand, PermissionArgs, RoleCommand, UserCommand};
use crate::exit::CtlError;
use crate::requests::prefix_end;

fn one<'a>(args: &'a [String], message: &str) -> Result<&'a str, CtlError> {
    match args {
        [only] => Ok(only),
        _ => Err(CtlError::bad_args(message)),
    }
}

/// A password from stdin: the first line, without its line ending.
fn password_from_stdin() -> Result<String, CtlError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CtlError::request(format!("read the password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn auth(context: &Context, command: &AuthCommand) -> anyhow::Result<()> {
    context.simple_printer("auth, user and role")?;
    let client = context.connect().await?;
    match command {
        AuthCommand::Enable => {
            // As etcdctl: a root user without the root role gets it, and enabling is retried.
            loop {
                match client.call(client.auth().auth_enable(AuthEnableRequest {})).await {
                    Ok(_) => break,
                    Err(e) if e.message.as_deref() == Some(EtcdError::RootRoleNotExist.message()) => {
                        let role = AuthRoleAddRequest { name: "root".into() };
                        if let Err(e) = client.call(client.auth().role_add(role)).await
                            && e.message.as_deref() != Some(EtcdError::RoleAlreadyExist.message())
                        {
                            return Err(e.into());
                        }
                        let grant = AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() };
                        client.call(client.auth().user_grant_role(grant)).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            println!("Authentication Enabled");
        }
        AuthCommand::Disable => {
            client.call(client.auth().auth_disable(AuthDisableRequest {})).await?;
            println!("Authentication Disabled");
        }
        AuthCommand::Status => {
            let status = client.call(client.auth().auth_status(AuthStatusRequest {})).await?;
            println!("Authentication Status: {}", status.enabled);
            println!("AuthRevision: {}", status.auth_revision);
        }
    }
    Ok(())
}

pub async fn user(context: &Context, command: &UserCommand) -> anyhow::Result<()> {
    context.simple_printer("auth, user and role")?;
    match command {
        UserCommand::Add { no_password, new_user_password, args, .. } => {
            let name = one(args, "user add command requires user name as its argument")?;
            let (name, password) = match name.split_once(':') {
                Some((name, password)) => (name.to_string(), password.to_string()),
                None if *no_password => (name.to_string(), String::new()),
                None => match new_user_password {
                    Some(password) => (name.to_string(), password.clone()),
                    None => (name.to_string(), password_from_stdin()?),
                },
            };
            let client = context.connect().await?;
            let options = Some(synod_api::authpb::UserAddOptions { no_password: *no_password });
            let request = AuthUserAddRequest { name: name.clone(), password, options, ..Default::default() };
            client.call(client.auth().user_add(request)).await?;
            println!("User {name} created");
        }
        UserCommand::Delete { args } => {
            let name = one(args, "user delete command requires user name as its argument")?;
            let client = context.connect().await?;
            client.call(client.auth().user_delete(AuthUserDeleteRequest { name: name.into() })).await?;
            println!("User {name} deleted");
        }
        UserCommand::Get { detail, args } => {
            let name = one(args, "user get command requires user name as its argument")?;
            let client = context.connect().await?;
            let user = client.call(client.auth().user_get(AuthUserGetRequest { name: name.into() })).await?;
            println!("User: {name}");
            if *detail {
                for role in &user.roles {
                    println!();
                    let got = client
                        .call(client.auth().role_get(AuthRoleGetRequest { role: role.clone() }))
                        .await?;
                    print_role(role, &got);
                }
            } else {
                let roles: String = user.roles.iter().map(|r| format!(" {r}")).collect();
                println!("Roles:{roles}");
            }
        }
        UserCommand::List => {
            let client = context.connect().await?;
            let users = client.call(client.auth().user_list(AuthUserListRequest {})).await?;
            for user in users.users {
                println!("{user}");
            }
        }
        UserCommand::Passwd { args, .. } => {
            let name = one(args, "user passwd command requires user name as its argument")?;
            let password = password_from_stdin()?;
            let client = context.connect().await?;
            let request = AuthUserChangePasswordRequest { name: name.into(), password, ..Default::default() };
            client.call(client.auth().user_change_password(request)).await?;
            println!("Password updated");
        }
        UserCommand::GrantRole { args } => {
            let [user, role] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "user grant command requires user name and role name as its argument",
                )
                .into());
            };
            let client = context.connect().await?;
            let request = AuthUserGrantRoleRequest { user: user.clone(), role: role.clone() };
            client.call(client.auth().user_grant_role(request)).await?;
            println!("Role {role} is granted to user {user}");
        }
        UserCommand::RevokeRole { args } => {
            let [user, role] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "user revoke-role requires user name and role name as its argument",
                )
                .into());
            };
            let client = context.connect().await?;
            let request = AuthUserRevokeRoleRequest { name: user.clone(), role: role.clone() };
            client.call(client.auth().user_revoke_role(request)).await?;
            println!("Role {role} is revoked from user {user}");
        }
    }
    Ok(())
}

pub async fn role(context: &Context, command: &RoleCommand) -> anyhow::Result<()> {
    context.simple_printer("auth, user and role")?;
    match command {
        RoleCommand::Add { args } => {
            let name = one(args, "role add command requires role name as its argument")?;
            let client = context.connect().await?;
            client.call(client.auth().role_add(AuthRoleAddRequest { name: name.into() })).await?;
            println!("Role {name} created");
        }
        RoleCommand::Delete { args } => {
            let name = one(args, "role delete command requires role name as its argument")?;
            let client = context.connect().await?;
            client.call(client.auth().role_delete(AuthRoleDeleteRequest { role: name.into() })).await?;
            println!("Role {name} deleted");
        }
        RoleCommand::Get { args } => {
            let name = one(args, "role get command requires role name as its argument")?;
            let client = context.connect().await?;
            let got = client.call(client.auth().role_get(AuthRoleGetRequest { role: name.into() })).await?;
            print_role(name, &got);
        }
        RoleCommand::List => {
            let client = context.connect().await?;
            let roles = client.call(client.auth().role_list(AuthRoleListRequest {})).await?;
            for role in roles.roles {
                println!("{role}");
            }
        }
        RoleCommand::GrantPermission(permission) => {
            let [role, kind, key, rest @ ..] = permission.args.as_slice() else {
                return Err(CtlError::bad_args("role grant command requires role name, permission type, and key [endkey] as its argument").into());
            };
            let perm_type = match kind.to_uppercase().as_str() {
                "READ" => PermType::Read,
                "WRITE" => PermType::Write,
                "READWRITE" => PermType::Readwrite,
                _ => return Err(CtlError::bad_args(format!("invalid permission type {kind}")).into()),
            };
            let range_end = range_end(key, rest, permission)?;
            let client = context.connect().await?;
            let perm = synod_api::authpb::Permission {
                perm_type: perm_type as i32,
                key: key.as_bytes().to_vec(),
                range_end,
            };
            let request = AuthRoleGrantPermissionRequest { name: role.clone(), perm: Some(perm) };
            client.call(client.auth().role_grant_permission(request)).await?;
            println!("Role {role} updated");
        }
        RoleCommand::RevokePermission(permission) => {
            let [role, key, rest @ ..] = permission.args.as_slice() else {
                return Err(CtlError::bad_args(
                    "role revoke-permission command requires role name and key [endkey] as its argument",
                )
                .into());
            };
            let range_end = range_end(key, rest, permission)?;
            let client = context.connect().await?;
            let request = AuthRoleRevokePermissionRequest {
                role: role.clone(),
                key: key.as_bytes().to_vec(),
                range_end: range_end.clone(),
            };
            client.call(client.auth().role_revoke_permission(request)).await?;
            let end = String::from_utf8_lossy(&range_end);
            if range_end.is_empty() {
                println!("Permission of key {key} is revoked from role {role}");
            } else if range_end != b"\0" {
                println!("Permission of range [{key}, {end}) is revoked from role {role}");
            } else {
                println!("Permission of range [{key}, <open ended> is revoked from role {role}");
            }
        }
    }
    Ok(())
}

/// The range end of a permission: the `[endkey]` argument, `--prefix` or `--from-key`.
fn range_end(key: &str, rest: &[String], permission: &PermissionArgs) -> Result<Vec<u8>, CtlError> {
    match (rest, permission.prefix, permission.from_key) {
        ([], false, false) => Ok(Vec::new()),
        ([end], false, false) => Ok(end.as_bytes().to_vec()),
        ([], true, false) => Ok(prefix_end(key.as_bytes())),
        ([], false, true) => Ok(vec![0]),
        ([], true, true) => Err(CtlError::bad_args("--from-key and --prefix flags are mutually exclusive")),
        _ => Err(CtlError::bad_args("too many arguments, or an end key with --prefix or --from-key")),
    }
}

/// etcdctl's simple `RoleGet`: the read and then the write permissions, a key alone or
/// as a range, with the prefix a range stands for.
fn print_role(role: &str, got: &AuthRoleGetResponse) {
    println!("Role {role}");
    for (title, kinds) in [
        ("KV Read:", [PermType::Read, PermType::Readwrite]),
        ("KV Write:", [PermType::Write, PermType::Readwrite]),
    ] {
        println!("{title}");
        for perm in got.perm.iter().filter(|p| kinds.iter().any(|k| *k as i32 == p.perm_type)) {
            let key = String::from_utf8_lossy(&perm.key);
            if perm.range_end.is_empty() {
                println!("\t{key}");
                continue;
            }
            let end = String::from_utf8_lossy(&perm.range_end);
            let mut line = if perm.range_end != b"\0" {
                format!("\t[{key}, {end})")
            } else {
                format!("\t[{key}, <open ended>")
            };
            if !perm.key.is_empty() && prefix_end(&perm.key) == perm.range_end {
                line.push_str(&format!(" (prefix {key})"));
            }
            println!("{line}");
        }
    }
}
