//! The programs at an interface's tcx ingress, by id: `BPF_PROG_QUERY`,
//! which needs only CAP_NET_ADMIN, where aya's query also opens each
//! program by id to read its name (CAP_SYS_ADMIN, which a pod granted
//! only NET_ADMIN and BPF does not have).

use std::io;

/// Ids of the programs at tcx ingress of interface `ifindex`, in chain
/// order.
///
/// # Errors
/// The kernel's error: the interface does not exist, the kernel has no
/// tcx (before 6.6), or more than 64 programs share the hook (`ENOSPC`).
pub(crate) fn tcx_ingress_ids(ifindex: u32) -> io::Result<Vec<u32>> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_TCX_INGRESS: u32 = 46;
    /// The `query` member of `union bpf_attr` (kernel 6.6+).
    #[repr(C)]
    struct Query {
        target_ifindex: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        count: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    let mut ids = vec![0u32; 64];
    let mut attr = Query {
        target_ifindex: ifindex,
        attach_type: BPF_TCX_INGRESS,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        count: ids.len() as u32,
        _pad: 0,
        prog_attach_flags: 0,
        link_ids: 0,
        link_attach_flags: 0,
        revision: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix of the size passed; the
    // kernel writes at most `count` ids into `ids`, which outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &raw mut attr,
            size_of::<Query>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    ids.truncate(attr.count as usize);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interface_that_does_not_exist_is_an_error() {
        // No interface has index 0; without CAP_NET_ADMIN the kernel says
        // EPERM, with it ENODEV: an error either way, never "no programs".
        assert!(tcx_ingress_ids(0).is_err());
    }
}
