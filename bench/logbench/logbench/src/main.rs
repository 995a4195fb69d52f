//! logbench: durable multi-group Raft log benchmark.
//!
//!   logbench run   [--backend B|all] [--workload W|all] [--runs 3] [--data DIR] [--out FILE.tsv]
//!   logbench floor [--n 20000] [--runs 3] [--data DIR] [--fill-chunk 4096]
//!   logbench config
//! Scaling flags: --size 300 --single-n 20000 --batch16-n 5000 --groups64-n 20000
//!   --purge-total 200000 --purge-through 190000 --recover-total 1000000
//! raft-engine knobs: --re-target-file-size BYTES --re-purge-threshold BYTES
//! --drop-caches: in `recover`, drop the page cache (sync; echo 1 > /proc/sys/vm/drop_caches) after loading,
//!   so the crash reopen reads from disk (the clean reopen after it is warm either way).

mod backends;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use logbench_core::{fresh_dir, Params, WORKLOADS};

pub struct Opts {
    pub backend: String,
    pub workload: String,
    pub runs: usize,
    pub data: PathBuf,
    pub out: Option<PathBuf>,
    pub floor_n: usize,
    pub floor_fill_chunk: usize,
    pub params: Params,
    pub re_target_file_size: Option<u64>,
    pub re_purge_threshold: Option<u64>,
    pub drop_caches: bool,
    pub dir: Option<PathBuf>,
}

fn parse() -> (String, Opts, Vec<String>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().cloned().unwrap_or_else(|| "help".into());
    let mut o = Opts {
        backend: "all".into(),
        workload: "all".into(),
        runs: 3,
        data: PathBuf::from("data"),
        out: None,
        floor_n: 20_000,
        floor_fill_chunk: 4096,
        params: Params::default(),
        re_target_file_size: None,
        re_purge_threshold: None,
        drop_caches: false,
        dir: None,
    };
    let mut i = 1;
    while i < args.len() {
        let k = args[i].as_str();
        if k == "--drop-caches" {
            o.drop_caches = true;
            i += 1;
            continue;
        }
        let v = args.get(i + 1).cloned().unwrap_or_else(|| panic!("{k} needs a value"));
        let n = || v.parse::<u64>().unwrap_or_else(|_| panic!("{k}: not a number"));
        match k {
            "--backend" => o.backend = v.clone(),
            "--workload" => o.workload = v.clone(),
            "--runs" => o.runs = n() as usize,
            "--data" => o.data = PathBuf::from(&v),
            "--out" => o.out = Some(PathBuf::from(&v)),
            "--n" => o.floor_n = n() as usize,
            "--fill-chunk" => o.floor_fill_chunk = n() as usize,
            "--size" => o.params.size = n() as usize,
            "--single-n" => o.params.single_n = n() as usize,
            "--batch16-n" => o.params.batch16_n = n() as usize,
            "--groups64-n" => o.params.groups64_n = n() as usize,
            "--purge-total" => o.params.purge_total = n(),
            "--purge-through" => o.params.purge_through = n(),
            "--recover-total" => o.params.recover_total = n(),
            "--re-target-file-size" => o.re_target_file_size = Some(n()),
            "--re-purge-threshold" => o.re_purge_threshold = Some(n()),
            "--dir" => o.dir = Some(PathBuf::from(&v)),
            _ => panic!("unknown flag {k}"),
        }
        i += 2;
    }
    (cmd, o, args)
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "1") {
        eprintln!("warning: cannot drop caches: {e}");
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let (cmd, o, raw) = parse();
    match cmd.as_str() {
        "config" => {
            for b in backends::names() {
                println!("{b}: {}", backends::get(b, &o).config());
            }
        }
        "_recover-load" => {
            let b = backends::get(&o.backend, &o);
            logbench_core::recover_load(&*b, o.dir.as_ref().unwrap(), &o.params);
        }
        "floor" => {
            std::fs::create_dir_all(&o.data).unwrap();
            let mut acc: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for r in 0..o.runs {
                let d = fresh_dir(&o.data, "floor");
                let out = logbench_core::floor(&d, o.floor_n, o.floor_fill_chunk);
                println!("floor run {r}: {:?}", out.metrics);
                for (k, v) in out.metrics {
                    acc.entry(k).or_default().push(v);
                }
                std::fs::remove_dir_all(&d).unwrap();
            }
            println!("\n| workload | metric | median of {} |\n|---|---|---|", o.runs);
            for (k, mut v) in acc {
                println!("| floor | {k} | {:.1} |", median(&mut v));
            }
        }
        "run" => {
            std::fs::create_dir_all(&o.data).unwrap();
            let bnames: Vec<String> =
                if o.backend == "all" { backends::names().iter().map(|s| s.to_string()).collect() } else { vec![o.backend.clone()] };
            let wnames: Vec<String> =
                if o.workload == "all" { WORKLOADS.iter().map(|s| s.to_string()).collect() } else { o.workload.split(',').map(String::from).collect() };
            let mut out = o.out.as_ref().map(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap());
            let mut acc: BTreeMap<(String, String), BTreeMap<&'static str, Vec<f64>>> = BTreeMap::new();
            let exe = std::env::current_exe().unwrap();
            // pass scaling / knob flags through to the loader child
            let passthru: Vec<String> = raw[1..].to_vec();
            for w in &wnames {
                // runs interleave the backends so machine-load drift hits both alike
                for r in 0..o.runs {
                    for bn in &bnames {
                    let b = backends::get(bn, &o);
                    if r == 0 {
                        eprintln!("# {}", b.config());
                    }
                        let d = fresh_dir(&o.data, &format!("{bn}-{w}-{r}"));
                        let loader = |dir: &std::path::Path| {
                            let mut a = vec!["_recover-load".to_string()];
                            a.extend(strip(&passthru, &["--backend", "--workload", "--runs", "--out", "--dir", "--data"]));
                            a.extend(["--backend".into(), bn.clone(), "--dir".into(), dir.to_string_lossy().into_owned()]);
                            let st = Command::new(&exe).args(&a).status().unwrap();
                            assert!(st.success(), "loader failed");
                            if o.drop_caches {
                                drop_caches();
                            }
                        };
                        let probe = logbench_core::probe(&d, 200);
                        let mut res = logbench_core::run(&*b, w, &d, &o.params, &loader);
                        res.metrics.push(("probe_fsync_p50_us", probe));
                        let line: Vec<String> = res.metrics.iter().map(|(k, v)| format!("{k}={v:.1}")).collect();
                        println!("{bn}\t{w}\trun{r}\t{}", line.join("\t"));
                        if let Some(f) = out.as_mut() {
                            for (k, v) in &res.metrics {
                                writeln!(f, "{bn}\t{w}\t{r}\t{k}\t{v}").unwrap();
                            }
                        }
                        for (k, v) in res.metrics {
                            acc.entry((w.clone(), bn.clone())).or_default().entry(k).or_default().push(v);
                        }
                        std::fs::remove_dir_all(&d).unwrap();
                    }
                }
            }
            println!("\n## medians of {} runs\n\n| workload | backend | metrics (median) |\n|---|---|---|", o.runs);
            for ((w, bn), ms) in acc {
                let cells: Vec<String> = ms.into_iter().map(|(k, mut v)| format!("{k} {:.1}", median(&mut v))).collect();
                println!("| {w} | {bn} | {} |", cells.join(", "));
            }
        }
        _ => {
            eprintln!("{}", include_str!("main.rs").lines().take_while(|l| l.starts_with("//!")).map(|l| &l[3..]).collect::<Vec<_>>().join("\n"));
        }
    }
}

/// Drop `--flag value` pairs named in `drop` from an argument list.
fn strip(args: &[String], drop: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if drop.contains(&args[i].as_str()) {
            i += 2;
        } else {
            v.push(args[i].clone());
            i += 1;
        }
    }
    v
}
