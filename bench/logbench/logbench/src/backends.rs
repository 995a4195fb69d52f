//! The registry of engines. To add one: a path dependency + feature in
//! logbench/Cargo.toml, and one arm here.
use logbench_core::Backend;

pub fn names() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(feature = "raft-engine")]
    v.push("raft-engine");
    #[cfg(feature = "redb")]
    v.push("redb");
    #[cfg(feature = "synod")]
    v.push("synod");
    // #[cfg(feature = "mine")] v.push("mine");
    v
}

pub fn get(name: &str, opts: &crate::Opts) -> Box<dyn Backend> {
    let _ = opts;
    match name {
        #[cfg(feature = "raft-engine")]
        "raft-engine" => Box::new(logbench_raft_engine::RaftEngineBackend {
            target_file_size: opts.re_target_file_size,
            purge_threshold: opts.re_purge_threshold,
        }),
        #[cfg(feature = "redb")]
        "redb" => Box::new(logbench_redb::RedbBackend::default()),
        #[cfg(feature = "synod")]
        "synod" => Box::new(logbench_synod::SynodBackend),
        // #[cfg(feature = "mine")]
        // "mine" => Box::new(logbench_mine::MineBackend::default()),
        _ => panic!("unknown backend {name}; built with: {:?}", names()),
    }
}
