//! `--fuse-transport` where the kernel has the ring switch but the daemon's
//! queues cannot register (io_uring blocked, as under Docker's default seccomp profile or
//! `kernel.io_uring_disabled=2`), an attach that asked for the ring at INIT is served by
//! nobody: Linux 6.14+ blocks every request of a connection that negotiated io_uring until
//! all its queues are registered (`fuse_block_alloc`), so I/O on the mount hangs in
//! `fuse_get_req`. `uring` must refuse such an attach (exit 10, nothing mounted); `auto`
//! must serve through `/dev/fuse`. Both failed before the daemon probed io_uring before
//! asking for the ring (`fuse_ring::can_create_rings`): the attach succeeded and I/O hung.
//! Needs root, FUSE and the ring switch.

mod common;

use std::process::Command;

use common::mount::*;

const IO_URING_SETUP: u32 = 425;
const IO_URING_ENTER: u32 = 426;

/// Makes the system call `nr` fail with EPERM in this thread and every process it starts.
fn block_syscall(nr: u32) {
    #[repr(C)]
    struct SockFilter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    let f = [
        // ld [nr]
        SockFilter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // jeq #io_uring_setup
        SockFilter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: nr,
        },
        // ret ERRNO(EPERM)
        SockFilter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x0005_0000 | libc::EPERM as u32,
        },
        // ret ALLOW
        SockFilter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        },
    ];
    let prog = SockFprog {
        len: f.len() as u16,
        filter: f.as_ptr(),
    };
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, 2, &prog as *const SockFprog),
            0
        );
    }
}

/// A 4 KiB write and fsync of `file` in a child killed after `secs`: whether it completed.
fn io_completes(file: &std::path::Path, secs: u32) -> bool {
    Command::new("timeout")
        .args([
            "-s",
            "KILL",
            &secs.to_string(),
            "dd",
            "if=/dev/zero",
            "bs=4k",
            "count=1",
        ])
        .arg(format!("of={}", file.display()))
        .arg("conv=notrunc,fsync")
        .status()
        .expect("timeout dd")
        .success()
}

fn attach_without_io_uring(transport: &str, blocked: u32) {
    needs!(Fuse, Root, FuseRing);
    block_syscall(blocked);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M", "--name", "r"]);
    let d = v.dir("r");
    let out = v.attach_run(&vol, &d, &["--fuse-transport", transport]);
    if transport == "uring" {
        assert_eq!(
            out.code, 10,
            "uring refuses where io_uring is blocked: {out:?}"
        );
        assert!(out.stderr.contains("--fuse-transport"), "{}", out.stderr);
        assert!(
            !std::fs::read_to_string("/proc/mounts")
                .unwrap()
                .contains(canon(&d).to_str().unwrap()),
            "a refused attach leaves nothing mounted"
        );
        return;
    }
    assert_eq!(out.code, 0, "auto falls back to /dev/fuse: {out:?}");
    let ok = io_completes(&canon(&d).join("volume"), 10);
    let status = v.status();
    v.detach(&d);
    assert!(
        ok,
        "--fuse-transport {transport}: attach succeeded (status says {}) but I/O on the mount hangs: \
         the connection negotiated io_uring at INIT and no queue ever registered",
        status
    );
}

#[test]
fn uring_where_io_uring_is_blocked_refuses_and_mounts_nothing() {
    attach_without_io_uring("uring", IO_URING_SETUP);
}

#[test]
fn auto_where_io_uring_is_blocked_serves_through_dev_fuse() {
    attach_without_io_uring("auto", IO_URING_SETUP);
}

// A filter that lets rings be made but not entered: the queues' rings exist, their
// REGISTER never reaches the kernel, and a connection that asked for the ring at INIT
// would hang. Before the probe entered its ring once (and each queue did so before INIT
// was answered), both attaches succeeded and I/O hung.

#[test]
fn uring_where_rings_cannot_be_entered_refuses_and_mounts_nothing() {
    attach_without_io_uring("uring", IO_URING_ENTER);
}

#[test]
fn auto_where_rings_cannot_be_entered_serves_through_dev_fuse() {
    attach_without_io_uring("auto", IO_URING_ENTER);
}
