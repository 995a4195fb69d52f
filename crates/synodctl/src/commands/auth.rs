//! `auth enable|disable|status`, `user ...` and `role ...`: etcd's Auth API, printed in
//! each format as etcdctl prints it (`auth enable` and `disable` print the same in all).
//! A password comes after a colon (`user add alice:secret`), from `--new-user-password`,
//! from a prompt (asked twice, as etcdctl does), or with `--interactive=false` as the
//! first word on stdin.

use synod_api::EtcdError;
use synod_api::authpb::permission::Type as PermType;
use synod_api::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGetRequest,
    AuthRoleGetResponse, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGetRequest, AuthUserGrantRoleRequest, AuthUserListRequest,
    AuthUserRevokeRoleRequest,
};

use super::{Context, emit};
use crate::cli::{AuthCommand, PermissionArgs, RoleCommand, UserCommand};
use crate::exit::CtlError;
use crate::printer::Reply;
use crate::requests::prefix_end;

fn one<'a>(args: &'a [String], message: &str) -> Result<&'a str, CtlError> {
    match args {
        [only] => Ok(only),
        _ => Err(CtlError::bad_args(message)),
    }
}

/// etcdctl's non-interactive password: the first word on stdin (`fmt.Scanf("%s")`).
fn password_from_stdin() -> Result<String, CtlError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CtlError::request(format!("read the password: {e}")))?;
    Ok(line.split_whitespace().next().unwrap_or_default().to_string())
}

/// etcdctl's interactive password: asked for twice on stdout and read from stdin, without
/// echo when stdin is a terminal; it must not be empty, and both answers must agree.
fn ask_password(name: &str) -> Result<String, CtlError> {
    let first = ask(&format!("Password of {name}: "))?;
    if first.is_empty() {
        return Err(CtlError::bad_args("empty password"));
    }
    if first != ask(&format!("Type password of {name} again for confirmation: "))? {
        return Err(CtlError::bad_args("given passwords are different"));
    }
    Ok(first)
}

fn ask(prompt: &str) -> Result<String, CtlError> {
    use std::io::{IsTerminal, Write};
    let failed = |e: std::io::Error| CtlError::bad_args(format!("failed to ask password: {e}"));
    let mut stdout = std::io::stdout();
    stdout.write_all(prompt.as_bytes()).and_then(|()| stdout.flush()).map_err(failed)?;
    if std::io::stdin().is_terminal() {
        // Ends the prompt's line itself.
        return console::Term::stdout().read_secure_line().map_err(failed);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(failed)?;
    stdout.write_all(b"\n").map_err(failed)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn auth(context: &Context, command: &AuthCommand) -> anyhow::Result<()> {
    let printer = context.printer()?;
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
            emit(printer.reply(Reply::AuthStatus(&status), |out| {
                out.extend(format!("Authentication Status: {}\n", status.enabled).bytes());
                out.extend(format!("AuthRevision: {}\n", status.auth_revision).bytes());
            })?)?;
        }
    }
    Ok(())
}

pub async fn user(context: &Context, command: &UserCommand) -> anyhow::Result<()> {
    let printer = context.printer()?;
    match command {
        UserCommand::Add { no_password, new_user_password, interactive, args } => {
            let name = one(args, "user add command requires user name as its argument")?;
            let (name, password) = match name.split_once(':') {
                Some((name, password)) => (name.to_string(), password.to_string()),
                None if *no_password => (name.to_string(), String::new()),
                None => match new_user_password {
                    Some(password) => (name.to_string(), password.clone()),
                    None if *interactive => (name.to_string(), ask_password(name)?),
                    None => (name.to_string(), password_from_stdin()?),
                },
            };
            let client = context.connect().await?;
            let options = Some(synod_api::authpb::UserAddOptions { no_password: *no_password });
            let request = AuthUserAddRequest { name: name.clone(), password, options, ..Default::default() };
            let response = client.call(client.auth().user_add(request)).await?;
            emit(printer.reply(Reply::Header(&response.header), |out| {
                out.extend(format!("User {name} created\n").bytes())
            })?)?;
        }
        UserCommand::Delete { args } => {
            let name = one(args, "user delete command requires user name as its argument")?;
            let client = context.connect().await?;
            let response =
                client.call(client.auth().user_delete(AuthUserDeleteRequest { name: name.into() })).await?;
            emit(printer.reply(Reply::Header(&response.header), |out| {
                out.extend(format!("User {name} deleted\n").bytes())
            })?)?;
        }
        UserCommand::Get { detail, args } => {
            let name = one(args, "user get command requires user name as its argument")?;
            let client = context.connect().await?;
            let user = client.call(client.auth().user_get(AuthUserGetRequest { name: name.into() })).await?;
            if *detail {
                // As etcdctl: the user's name in every format, then each role as `role get`
                // prints it.
                emit(format!("User: {name}\n").into_bytes().into())?;
                for role in &user.roles {
                    let got = client
                        .call(client.auth().role_get(AuthRoleGetRequest { role: role.clone() }))
                        .await?;
                    emit(b"\n".to_vec().into())?;
                    emit(printer.reply(Reply::RoleGet(&got), |out| print_role(out, role, &got))?)?;
                }
            } else {
                emit(printer.reply(Reply::UserGet(&user), |out| {
                    let roles: String = user.roles.iter().map(|r| format!(" {r}")).collect();
                    out.extend(format!("User: {name}\nRoles:{roles}\n").bytes());
                })?)?;
            }
        }
        UserCommand::List => {
            let client = context.connect().await?;
            let users = client.call(client.auth().user_list(AuthUserListRequest {})).await?;
            emit(printer.reply(Reply::UserList(&users), |out| {
                for user in &users.users {
                    out.extend(format!("{user}\n").bytes());
                }
            })?)?;
        }
        UserCommand::Passwd { interactive, args } => {
            let name = one(args, "user passwd command requires user name as its argument")?;
            let password = if *interactive { ask_password(name)? } else { password_from_stdin()? };
            let client = context.connect().await?;
            let request = AuthUserChangePasswordRequest { name: name.into(), password, ..Default::default() };
            let response = client.call(client.auth().user_change_password(request)).await?;
            emit(printer.reply(Reply::Header(&response.header), |out| out.extend(b"Password updated\n"))?)?;
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
            let response = client.call(client.auth().user_grant_role(request)).await?;
            emit(printer.reply(Reply::Header(&response.header), |out| {
                out.extend(format!("Role {role} is granted to user {user}\n").bytes())
            })?)?;
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
            let response = client.call(client.auth().user_revoke_role(request)).await?;
            emit(printer.reply(Reply::Header(&response.header), |out| {
                out.extend(format!("Role {role} is revoked from user {user}\n").bytes())
            })?)?;
        }
    }
    Ok(())
}

pub async fn role(context: &Context, command: &RoleCommand) -> anyhow::Result<()> {
    let printer = context.printer()?;
    match command {
        RoleCommand::Add { args } => {
            let name = one(args, "role add command requires role name as its argument")?;
            let client = context.connect().await?;
            let response =
                client.call(client.auth().role_add(AuthRoleAddRequest { name: name.into() })).await?;
            emit(printer.reply(Reply::Header(&response.header), |out| {
                out.extend(format!("Role {name} created\n").bytes())
            })?)?;
        }
        RoleCommand::Delete { args } => {
            let name = one(args, "role delete command requires role name as its argument")?;
            let client = context.connect().await?;
            let response =
                client.call(client.auth().role_delete(AuthRoleDeleteRequest { role: name.into() })).await?;
            emit(printer.reply(Reply::Header(&response.header), |out| {
                out.extend(format!("Role {name} deleted\n").bytes())
            })?)?;
        }
        RoleCommand::Get { args } => {
            let name = one(args, "role get command requires role name as its argument")?;
            let client = context.connect().await?;
            let got = client.call(client.auth().role_get(AuthRoleGetRequest { role: name.into() })).await?;
            emit(printer.reply(Reply::RoleGet(&got), |out| print_role(out, name, &got))?)?;
        }
        RoleCommand::List => {
            let client = context.connect().await?;
            let roles = client.call(client.auth().role_list(AuthRoleListRequest {})).await?;
            emit(printer.reply(Reply::RoleList(&roles), |out| {
                for role in &roles.roles {
                    out.extend(format!("{role}\n").bytes());
                }
            })?)?;
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
            let response = client.call(client.auth().role_grant_permission(request)).await?;
            emit(printer.reply(Reply::Header(&response.header), |out| {
                out.extend(format!("Role {role} updated\n").bytes())
            })?)?;
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
            let response = client.call(client.auth().role_revoke_permission(request)).await?;
            let end = String::from_utf8_lossy(&range_end);
            let text = if range_end.is_empty() {
                format!("Permission of key {key} is revoked from role {role}\n")
            } else if range_end != b"\0" {
                format!("Permission of range [{key}, {end}) is revoked from role {role}\n")
            } else {
                format!("Permission of range [{key}, <open ended> is revoked from role {role}\n")
            };
            emit(printer.reply(Reply::Header(&response.header), |out| out.extend(text.bytes()))?)?;
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
fn print_role(out: &mut Vec<u8>, role: &str, got: &AuthRoleGetResponse) {
    out.extend(format!("Role {role}\n").bytes());
    for (title, kinds) in [
        ("KV Read:", [PermType::Read, PermType::Readwrite]),
        ("KV Write:", [PermType::Write, PermType::Readwrite]),
    ] {
        out.extend(format!("{title}\n").bytes());
        for perm in got.perm.iter().filter(|p| kinds.iter().any(|k| *k as i32 == p.perm_type)) {
            let key = String::from_utf8_lossy(&perm.key);
            if perm.range_end.is_empty() {
                out.extend(format!("\t{key}\n").bytes());
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
            out.extend(format!("{line}\n").bytes());
        }
    }
}
