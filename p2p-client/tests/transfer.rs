//! `send_files` / `receive_files` over a real quinn pair on loopback, with real files.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod quic_pair;

use std::fs;
use std::path::{Path, PathBuf};

use p2p_client::transfer::{FileDone, TransferError, TransferEvent, receive_files, send_files};
use quinn::VarInt;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use shared::transfer::{
    Message, RefuseReason, ResumeKey, decode_frame, partial_name, sidecar_name,
};

type RunResult = (
    Result<Vec<FileDone>, TransferError>,
    Result<Vec<FileDone>, TransferError>,
    Vec<TransferEvent>,
    Vec<TransferEvent>,
);

fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let path = dir.join(name);
    fs::write(&path, &data).unwrap();
    path
}

fn sha256_of(path: &Path) -> [u8; 32] {
    Sha256::digest(fs::read(path).unwrap()).into()
}

/// One session. With `stop_at = Some((partial, n))`, a watcher thread closes the sender's
/// connection as soon as the receiver's partial copy holds `n` bytes: an interruption in
/// the middle of a file, whatever the speed, with a known minimum to resume from.
async fn run(files: &[PathBuf], out: &Path, stop_at: Option<(PathBuf, u64)>) -> RunResult {
    let pair = quic_pair::pair().await;
    let mut sent_events = Vec::new();
    let mut received_events = Vec::new();
    let watcher = stop_at.map(|(partial, n)| {
        let conn = pair.client.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while fs::metadata(&partial).map_or(0, |m| m.len()) < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the partial copy never grew"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            conn.close(VarInt::from_u32(9), b"interrupted by the test");
        })
    });
    let mut on_send = |e: TransferEvent| sent_events.push(e);
    let mut on_receive = |e: TransferEvent| received_events.push(e);
    let (sent, received) = tokio::join!(
        send_files(&pair.client, files, &mut on_send),
        receive_files(&pair.server, out, &mut on_receive),
    );
    if let Some(watcher) = watcher {
        watcher.join().unwrap();
    }
    pair.shutdown().await;
    (sent, received, sent_events, received_events)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_files_arrive_whole() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = vec![
        random_file(src.path(), "empty", 0, 1),
        random_file(src.path(), "small.txt", 1000, 2),
        random_file(src.path(), "big.bin", 50 << 20, 3),
        random_file(src.path(), "odd size", (1 << 20) + 17, 4),
    ];
    let started = std::time::Instant::now();
    let (sent, received, sent_events, received_events) = run(&files, out.path(), None).await;
    let elapsed = started.elapsed();
    let sent = sent.unwrap();
    let received = received.unwrap();
    eprintln!("{} MB in {elapsed:?}", (51 << 20) / 1_000_000);
    assert_eq!(sent.len(), 4);
    assert_eq!(received.len(), 4);
    for (i, path) in files.iter().enumerate() {
        let name = path.file_name().unwrap().to_str().unwrap();
        let copy = out.path().join(name);
        assert_eq!(fs::read(&copy).unwrap(), fs::read(path).unwrap(), "{name}");
        let digest = sha256_of(path);
        assert_eq!(sent[i].sha256, digest);
        assert_eq!(received[i].sha256, digest);
        assert_eq!(received[i].path, copy);
        assert_eq!(received[i].resumed_from, 0);
        for events in [&sent_events, &received_events] {
            let done = TransferEvent::Done {
                file: name.to_owned(),
                bytes: fs::metadata(path).unwrap().len(),
                sha256_hex: sent[i].sha256_hex(),
            };
            assert!(events.contains(&done), "{name}: {done:?}");
        }
    }
    // No temporary files left behind.
    assert_eq!(
        names_in(out.path()),
        ["big.bin", "empty", "odd size", "small.txt"]
    );
    // Throttled progress: start and end per file plus at most ~10 a second.
    let progress = received_events
        .iter()
        .filter(|e| matches!(e, TransferEvent::Progress { .. }))
        .count();
    let allowed = 8 + 4 * (elapsed.as_millis() as usize / 100 + 1);
    assert!(
        progress <= allowed,
        "{progress} progress events in {elapsed:?}"
    );
}

/// An interrupted run, returning the source file and the partial copy's path.
async fn interrupted(src: &Path, out: &Path) -> (PathBuf, PathBuf) {
    let file = random_file(src, "movie.mkv", 32 << 20, 7);
    let partial = out.join(partial_name("movie.mkv"));
    let stop_at = Some((partial.clone(), 4 << 20));
    let (sent, received, _, _) = run(std::slice::from_ref(&file), out, stop_at).await;
    assert!(sent.is_err(), "the sender was interrupted");
    assert!(received.is_err(), "the receiver saw the connection go");
    let len = fs::metadata(&partial).unwrap().len();
    assert!(
        (4 << 20..32 << 20).contains(&len),
        "partial copy of {len} bytes"
    );
    assert!(out.join(sidecar_name("movie.mkv")).exists());
    assert!(!out.join("movie.mkv").exists());
    (file, partial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_transfer_resumes() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, partial) = interrupted(src.path(), out.path()).await;
    let partial_len = fs::metadata(&partial).unwrap().len();

    let (sent, received, sent_events, _) = run(std::slice::from_ref(&file), out.path(), None).await;
    let sent = sent.unwrap();
    let received = received.unwrap();
    assert_eq!(received[0].resumed_from, partial_len);
    assert_eq!(sent[0].resumed_from, partial_len);
    assert!(sent_events.contains(&TransferEvent::Resumed {
        file: "movie.mkv".into(),
        from: partial_len
    }));
    let copy = out.path().join("movie.mkv");
    assert_eq!(sha256_of(&copy), sha256_of(&file));
    assert_eq!(received[0].sha256, sha256_of(&file));
    assert_eq!(names_in(out.path()), ["movie.mkv"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_partial_copy_fails_the_hash_and_is_removed() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (file, partial) = interrupted(src.path(), out.path()).await;
    let mut bytes = fs::read(&partial).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&partial, &bytes).unwrap();

    let (sent, received, _, _) = run(std::slice::from_ref(&file), out.path(), None).await;
    assert!(
        matches!(sent, Err(TransferError::HashMismatch { .. })),
        "{sent:?}"
    );
    assert!(
        matches!(received, Err(TransferError::HashMismatch { .. })),
        "{received:?}"
    );
    assert!(
        names_in(out.path()).is_empty(),
        "{:?}",
        names_in(out.path())
    );

    let (sent, received, _, _) = run(std::slice::from_ref(&file), out.path(), None).await;
    assert_eq!(sent.unwrap()[0].resumed_from, 0);
    assert_eq!(received.unwrap()[0].sha256, sha256_of(&file));
    assert_eq!(
        fs::read(out.path().join("movie.mkv")).unwrap(),
        fs::read(&file).unwrap()
    );
}

/// Sends one header with `name` straight from the wire encoder and returns the reply.
async fn hostile_header(name: &str, out: &Path) -> (Message, Result<Vec<FileDone>, TransferError>) {
    let pair = quic_pair::pair().await;
    let attack = async {
        let (mut send, mut recv) = pair.client.open_bi().await.unwrap();
        let header = Message::FileHeader {
            name: name.to_owned(),
            key: ResumeKey {
                size: 3,
                modified_ns: 0,
            },
        };
        send.write_all(&header.to_vec().unwrap()).await.unwrap();
        // Data the receiver must never write anywhere.
        let _ = send.write_all(b"pwn").await;
        let reply = recv.read_to_end(4096).await.unwrap();
        let (message, used) = decode_frame(&reply).unwrap().unwrap();
        assert_eq!(used, reply.len());
        message
    };
    let mut ignore = |_| {};
    let (reply, received) = tokio::join!(attack, receive_files(&pair.server, out, &mut ignore));
    pair.shutdown().await;
    (reply, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_and_nothing_leaves_the_output_directory() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    fs::create_dir(&out).unwrap();
    for name in [
        "../x",
        "/etc/x",
        "a/b",
        "..",
        ".",
        "",
        "x\0y",
        "..\\x",
        ".x.p2p-partial",
    ] {
        let (reply, received) = hostile_header(name, &out).await;
        assert!(
            matches!(
                reply,
                Message::Refuse {
                    reason: RefuseReason::BadName,
                    ..
                }
            ),
            "{name:?}: {reply:?}"
        );
        assert!(
            matches!(received, Err(TransferError::BadName { .. })),
            "{name:?}: {received:?}"
        );
    }
    assert!(names_in(&out).is_empty(), "{:?}", names_in(&out));
    assert_eq!(names_in(root.path()), ["out"]);
    assert!(!Path::new("/etc/x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_name_is_refused_and_kept() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "a.txt", 100, 9);
    fs::write(out.path().join("a.txt"), b"old").unwrap();
    let (sent, received, _, _) = run(std::slice::from_ref(&file), out.path(), None).await;
    assert!(
        matches!(
            sent,
            Err(TransferError::Refused {
                reason: RefuseReason::Exists,
                ..
            })
        ),
        "{sent:?}"
    );
    assert!(
        matches!(received, Err(TransferError::Exists { .. })),
        "{received:?}"
    );
    assert_eq!(fs::read(out.path().join("a.txt")).unwrap(), b"old");
    assert_eq!(names_in(out.path()), ["a.txt"]);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_at_our_names_are_not_followed() {
    use std::os::unix::fs::symlink;
    let src = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    fs::create_dir(&out).unwrap();
    let secret = root.path().join("secret");
    fs::write(&secret, b"secret").unwrap();

    // At the final name: refused, the link and its target untouched.
    symlink(&secret, out.join("victim")).unwrap();
    let file = random_file(src.path(), "victim", 100, 10);
    let (sent, received, _, _) = run(std::slice::from_ref(&file), &out, None).await;
    assert!(
        matches!(sent, Err(TransferError::Refused { .. })),
        "{sent:?}"
    );
    assert!(
        matches!(received, Err(TransferError::Exists { .. })),
        "{received:?}"
    );
    assert_eq!(fs::read(&secret).unwrap(), b"secret");
    assert!(
        fs::symlink_metadata(out.join("victim"))
            .unwrap()
            .is_symlink()
    );

    // At the partial and sidecar names: replaced by fresh files, never written through.
    symlink(&secret, out.join(partial_name("other"))).unwrap();
    symlink(&secret, out.join(sidecar_name("other"))).unwrap();
    let file = random_file(src.path(), "other", 1000, 11);
    let (sent, received, _, _) = run(std::slice::from_ref(&file), &out, None).await;
    sent.unwrap();
    received.unwrap();
    assert_eq!(fs::read(&secret).unwrap(), b"secret");
    let copy = out.join("other");
    assert!(fs::symlink_metadata(&copy).unwrap().is_file());
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&file).unwrap());
    assert_eq!(names_in(&out), ["other", "victim"]);
}

/// Unmounts the test's small file system however the test ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A file bigger than the output directory's free space is refused before anything is
/// written, with both sizes in the error. Needs root (a 1 MiB tmpfs is mounted for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_fit_is_refused_before_anything_is_written() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(out.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs (needs root), and CI=true"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root); the free-space check is untested");
        return;
    }
    let _guard = Mounted(out.path().to_owned());
    let file = random_file(src.path(), "big.bin", 3 << 20, 11);
    let (sent, received, _, _) = run(std::slice::from_ref(&file), out.path(), None).await;
    let Err(TransferError::NoSpace {
        need, available, ..
    }) = received
    else {
        panic!("{received:?}");
    };
    assert_eq!(need, 3 << 20);
    assert!(available < need, "{available}");
    assert!(
        matches!(
            sent,
            Err(TransferError::Refused {
                reason: RefuseReason::Io,
                ..
            })
        ),
        "{sent:?}"
    );
    assert!(
        names_in(out.path()).is_empty(),
        "{:?}",
        names_in(out.path())
    );
}
