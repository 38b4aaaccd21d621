//! cgroup helpers: which cgroup v1 hierarchy serves as the fallback cgroup id.
//!
//! On nodes whose runtime puts containers only in cgroup v1 hierarchies the
//! cgroup2 id is always the root, so events also carry the kernfs id of the
//! task's cgroup in one v1 hierarchy. The kernel needs that hierarchy's
//! subsystem index, which is the row number in `/proc/cgroups`.

/// Subsystem index of `controller` in `/proc/cgroups` text, if it is mounted
/// as cgroup v1 (hierarchy id non-zero). `"auto"` prefers `memory`, then the
/// first mounted one; `"none"` disables the fallback.
pub fn v1_subsys_index(proc_cgroups: &str, controller: &str) -> Option<u32> {
    if controller == "none" {
        return None;
    }
    let rows: Vec<(u32, &str, u32)> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .enumerate()
        .filter_map(|(i, l)| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let hierarchy = f.next()?.parse().ok()?;
            Some((u32::try_from(i).ok()?, name, hierarchy))
        })
        .collect();
    let mounted = |name: &str| rows.iter().find(|r| r.1 == name && r.2 != 0).map(|r| r.0);
    match controller {
        "auto" => mounted("memory").or_else(|| rows.iter().find(|r| r.2 != 0).map(|r| r.0)),
        name => mounted(name),
    }
}

/// [`v1_subsys_index`] on this machine's `/proc/cgroups`.
pub fn detect_v1_subsys(controller: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/cgroups").ok()?;
    v1_subsys_index(&text, controller)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
cpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nblkio\t7\t1\t1\nmemory\t4\t1\t1\n\
devices\t5\t41\t1\nfreezer\t6\t1\t1\npids\t8\t1\t1\n";
    const UNIFIED: &str =
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t1\t1\nmemory\t0\t1\t1\n";

    #[test]
    fn picks_memory_row() {
        assert_eq!(v1_subsys_index(HYBRID, "auto"), Some(4));
        assert_eq!(v1_subsys_index(HYBRID, "pids"), Some(7));
        assert_eq!(v1_subsys_index(HYBRID, "none"), None);
        assert_eq!(v1_subsys_index(UNIFIED, "auto"), None);
        assert_eq!(v1_subsys_index(UNIFIED, "memory"), None);
    }
}
