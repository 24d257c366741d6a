//! Hostile paths and files on the source side: each case has one expected,
//! clear outcome that names the path. (End-to-end counterparts, through a
//! real daemon, are in tests/tests/hostile_paths.rs.)

use super::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

fn no_progress(_: u64) {}

fn root_directory(tree: &Tree) -> Directory {
    let bytes = &tree
        .directories
        .iter()
        .find(|(d, _)| *d == tree.root)
        .expect("root is listed")
        .1;
    Directory::decode(bytes.as_slice()).expect("root decodes")
}

fn file_node(name: &str) -> FileNode {
    FileNode {
        name: name.into(),
        digest: Some(hash_bytes(b"").to_proto()),
        ..Default::default()
    }
}

fn raw_file_node(raw_name: &[u8]) -> FileNode {
    FileNode {
        raw_name: raw_name.to_vec(),
        digest: Some(hash_bytes(b"").to_proto()),
        ..Default::default()
    }
}

#[test]
fn dotdot_absolute_slash_nul_and_empty_names_are_refused_in_directory_messages() {
    // A hostile client can send any Directory message; names are the only
    // way a tree could reach outside its root when materialized.
    for name in ["..", ".", "", "/etc", "a/b", "../x", "nul\0byte"] {
        let as_file = Directory {
            files: vec![file_node(name)],
            ..Default::default()
        };
        let as_dir = Directory {
            directories: vec![DirectoryNode {
                name: name.into(),
                digest: Some(hash_bytes(b"").to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let as_link = Directory {
            symlinks: vec![SymlinkNode {
                name: name.into(),
                target: "x".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        for directory in [as_file, as_dir, as_link] {
            match validate_directory(&directory) {
                Err(TreeError::MalformedDirectory(message)) => {
                    assert!(
                        message.contains(&format!("{name:?}")),
                        "{message:?} does not name {name:?}"
                    )
                }
                other => panic!("{name:?} was accepted: {other:?}"),
            }
        }
    }
}

#[test]
fn symlink_targets_may_point_anywhere_but_not_be_empty_or_hold_nul() {
    let link = |target: &str| Directory {
        symlinks: vec![SymlinkNode {
            name: "l".into(),
            target: target.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // Recorded as links, never followed: an outside target is data.
    for target in ["/etc/shadow", "../../../../etc", "l", "."] {
        validate_directory(&link(target)).unwrap();
    }
    for target in ["", "a\0b"] {
        assert!(matches!(
            validate_directory(&link(target)),
            Err(TreeError::MalformedDirectory(m)) if m.contains("\"l\"")
        ));
    }
}

#[test]
fn non_utf8_names_and_targets_round_trip_in_their_raw_fields() {
    let dir = tempfile::tempdir().unwrap();
    let latin1 = OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(dir.path().join(latin1), b"x").unwrap();
    let subdir = dir.path().join(OsStr::from_bytes(b"d\xff"));
    std::fs::create_dir(&subdir).unwrap();
    std::fs::write(subdir.join("inner"), b"y").unwrap();
    symlink(OsStr::from_bytes(b"\xff\xfe"), dir.path().join("link")).unwrap();
    symlink("caf\u{e9}", dir.path().join(OsStr::from_bytes(b"l\x80"))).unwrap();
    let tree = build_tree(dir.path(), None, &no_progress).unwrap();
    let relatives: Vec<&[u8]> = tree
        .files
        .iter()
        .map(|f| f.relative.as_os_str().as_bytes())
        .collect();
    assert_eq!(relatives, [&b"caf\xe9.txt"[..], b"d\xff/inner"]);
    assert_eq!(tree.files[0].path, dir.path().join(latin1));
    let root = root_directory(&tree);
    validate_directory(&root).unwrap();
    assert_eq!(root.files[0].name, "");
    assert_eq!(root.files[0].raw_name, b"caf\xe9.txt");
    assert_eq!(root.directories[0].raw_name, b"d\xff");
    let link = &root.symlinks[0];
    assert_eq!((link.name.as_str(), link.target.as_str()), ("link", ""));
    assert_eq!(link.raw_target, b"\xff\xfe");
    let other = &root.symlinks[1];
    assert_eq!(other.raw_name, b"l\x80");
    assert_eq!(other.target, "caf\u{e9}");
    assert!(other.raw_target.is_empty());
    // The encoded directory decodes to the same bytes and digest.
    for (digest, bytes) in &tree.directories {
        let decoded = Directory::decode(bytes.as_slice()).unwrap();
        validate_directory(&decoded).unwrap();
        assert_eq!(directory_digest(&decoded), *digest);
    }
}

#[test]
fn a_raw_name_that_is_utf8_or_doubles_a_utf8_name_is_refused() {
    // One name, one encoding: else one tree would have two digests.
    let mut both = raw_file_node(b"caf\xe9");
    both.name = "cafe".into();
    let utf8_in_raw = raw_file_node(b"cafe");
    for node in [both, utf8_in_raw] {
        let directory = Directory {
            files: vec![node],
            ..Default::default()
        };
        assert!(matches!(
            validate_directory(&directory),
            Err(TreeError::MalformedDirectory(m)) if m.contains("cafe")
        ));
    }
    let raw_target = Directory {
        symlinks: vec![SymlinkNode {
            name: "l".into(),
            raw_target: b"utf8".to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(validate_directory(&raw_target).is_err());
}

#[test]
fn raw_names_with_slash_nul_or_dots_are_refused_and_sorting_is_by_bytes() {
    for name in [&b"a/\xff"[..], b"\xff\0", b"\xff/.."] {
        let directory = Directory {
            files: vec![raw_file_node(name)],
            ..Default::default()
        };
        match validate_directory(&directory) {
            // Shown with the byte escaped, never as U+FFFD.
            Err(TreeError::MalformedDirectory(m)) => assert!(m.contains("\\xFF"), "{m}"),
            other => panic!("{name:?} was accepted: {other:?}"),
        }
    }
    let raw_target = |target: &[u8]| Directory {
        symlinks: vec![SymlinkNode {
            name: "l".into(),
            raw_target: target.to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    };
    validate_directory(&raw_target(b"../\xff")).unwrap();
    assert!(validate_directory(&raw_target(b"\xff\0")).is_err());
    // "z" (0x7a) sorts before 0xe9 as a byte.
    let sorted = Directory {
        files: vec![file_node("z"), raw_file_node(b"\xe9")],
        ..Default::default()
    };
    validate_directory(&sorted).unwrap();
    let unsorted = Directory {
        files: vec![raw_file_node(b"\xe9"), file_node("z")],
        ..Default::default()
    };
    assert!(validate_directory(&unsorted).is_err());
    // A raw name and a UTF-8 name in two lists are still two names; the
    // same bytes twice are refused whatever lists they are in.
    let twice = Directory {
        files: vec![raw_file_node(b"\xe9")],
        directories: vec![DirectoryNode {
            raw_name: b"\xe9".to_vec(),
            digest: Some(hash_bytes(b"").to_proto()),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(matches!(
        validate_directory(&twice),
        Err(TreeError::MalformedDirectory(m)) if m.contains("appears twice")
    ));
}

#[test]
fn a_unix_socket_in_the_source_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sub").join("daemon.sock");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    match build_tree(dir.path(), None, &no_progress) {
        Err(TreeError::UnsupportedFileType { path, kind }) => {
            assert_eq!(path, socket);
            assert_eq!(kind, "socket");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn device_nodes_in_the_source_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind, major, minor, expected) in [
        ("null", "c", "1", "3", "character device"),
        ("loop", "b", "7", "0", "block device"),
    ] {
        let node = dir.path().join(name);
        let made = std::process::Command::new("mknod")
            .arg(&node)
            .args([kind, major, minor])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !made {
            // Needs CAP_MKNOD; the FIFO and socket cases cover the same code
            // path without it.
            eprintln!("skipped {expected}: mknod is not permitted here");
            continue;
        }
        match build_tree(dir.path(), None, &no_progress) {
            Err(TreeError::UnsupportedFileType { path, kind }) => {
                assert_eq!(path, node);
                assert_eq!(kind, expected);
            }
            other => panic!("expected a refusal of {name}, got {other:?}"),
        }
        std::fs::remove_file(&node).unwrap();
    }
}

#[test]
fn symlink_loops_are_recorded_as_links_and_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    symlink("b", dir.path().join("a")).unwrap();
    symlink("a", dir.path().join("b")).unwrap();
    symlink("self", dir.path().join("self")).unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    symlink("..", dir.path().join("d/up")).unwrap();
    let tree = build_tree(dir.path(), None, &no_progress).unwrap();
    assert!(tree.files.is_empty());
    let root = root_directory(&tree);
    let links: Vec<(&str, &str)> = root
        .symlinks
        .iter()
        .map(|s| (s.name.as_str(), s.target.as_str()))
        .collect();
    assert_eq!(links, vec![("a", "b"), ("b", "a"), ("self", "self")]);
    // d/up -> .. is one link in d, not a walk back into the root.
    assert_eq!(tree.directories.len(), 2);
}

#[test]
fn hardlinks_are_two_files_with_one_blob() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("one"), b"shared bytes").unwrap();
    std::fs::hard_link(dir.path().join("one"), dir.path().join("two")).unwrap();
    let tree = build_tree(dir.path(), None, &no_progress).unwrap();
    let names: Vec<&str> = tree
        .files
        .iter()
        .map(|f| f.relative.to_str().unwrap())
        .collect();
    assert_eq!(names, vec!["one", "two"]);
    assert_eq!(tree.files[0].digest, tree.files[1].digest);
    // One directory message and one file blob to upload.
    assert_eq!(tree.blob_digests().len(), 2);
}

#[test]
fn a_tree_deeper_than_the_limit_is_refused_naming_the_first_directory_too_deep() {
    let dir = tempfile::tempdir().unwrap();
    let mut path = dir.path().to_path_buf();
    for _ in 0..MAX_TREE_DEPTH {
        path.push("d");
    }
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("leaf"), b"deep").unwrap();
    // Exactly the limit is fine.
    let tree = build_tree(dir.path(), None, &no_progress).unwrap();
    assert_eq!(tree.directories.len(), MAX_TREE_DEPTH + 1);
    assert_eq!(
        tree.files[0].relative.components().count(),
        MAX_TREE_DEPTH + 1
    );

    // 300 deep is not.
    let mut deeper = path.clone();
    for _ in MAX_TREE_DEPTH..300 {
        deeper.push("d");
    }
    std::fs::create_dir_all(&deeper).unwrap();
    match build_tree(dir.path(), None, &no_progress) {
        Err(TreeError::TooDeep { path: at, max }) => {
            assert_eq!(max, MAX_TREE_DEPTH);
            assert_eq!(at, path.join("d"));
        }
        other => panic!("expected TooDeep, got {other:?}"),
    }
}

#[test]
fn the_longest_allowed_name_is_hashed_and_a_path_past_path_max_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let long = "n".repeat(255);
    std::fs::write(dir.path().join(&long), b"x").unwrap();
    let tree = build_tree(dir.path(), None, &no_progress).unwrap();
    assert_eq!(tree.files[0].relative, Path::new(&long));

    // 20 directories of 250 bytes: each name is legal, the whole path is
    // longer than PATH_MAX (4096), so it cannot even be opened by name.
    // Built with relative mkdir/cd steps, which the kernel allows.
    let deep = dir.path().join("deep");
    std::fs::create_dir(&deep).unwrap();
    let segment = "s".repeat(250);
    let script = format!(
        "cd {} && for i in $(seq 20); do mkdir {segment} && cd -P {segment}; done && echo x > f",
        deep.display()
    );
    let made = std::process::Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(made.success());
    match build_tree(&deep, None, &no_progress) {
        Err(TreeError::Io { path, source }) => {
            assert_eq!(source.raw_os_error(), Some(36), "ENAMETOOLONG: {source}");
            assert!(path.starts_with(&deep), "{}", path.display());
        }
        other => panic!("expected ENAMETOOLONG naming the path, got {other:?}"),
    }
}

/// The stat data an earlier look at the file saw (the walk, with a cache).
fn seen(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).unwrap()
}

#[test]
fn a_file_that_grew_after_the_walk_is_refused_not_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"before").unwrap();
    let seen = seen(&path);
    std::fs::write(&path, b"before and after").unwrap();
    match hash_stable(&path, Some(&seen)) {
        Err(TreeError::ChangedWhileHashing { path: named }) => assert_eq!(named, path),
        other => panic!("expected ChangedWhileHashing, got {other:?}"),
    }
}

#[test]
fn a_same_size_rewrite_or_a_replaced_inode_is_refused_not_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"aaaa").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let before = seen(&path);
    // Same size, new bytes, new mtime.
    std::fs::write(&path, b"bbbb").unwrap();
    assert!(matches!(
        hash_stable(&path, Some(&before)),
        Err(TreeError::ChangedWhileHashing { .. })
    ));
    // Same size and bytes, but a different file renamed over it.
    let before = seen(&path);
    let other = dir.path().join("g");
    std::fs::write(&other, b"bbbb").unwrap();
    std::fs::rename(&other, &path).unwrap();
    assert!(matches!(
        hash_stable(&path, Some(&before)),
        Err(TreeError::ChangedWhileHashing { .. })
    ));
    // Unchanged: hashed, and the cache gets nothing it cannot trust.
    let hashed = hash_stable(&path, Some(&seen(&path))).unwrap();
    assert!(hashed.read);
    assert_eq!(hashed.digest, hash_bytes(b"bbbb"));
}

#[test]
fn a_file_changing_while_it_is_read_is_never_given_a_digest_of_other_bytes() {
    // A writer rewrites the file as fast as it can while it is hashed: every
    // outcome must be either a refusal or the digest of one state the file
    // was in (relies on the kernel giving a changed file a new mtime or
    // ctime: fine-grained timestamps, as on Linux >= 6.13 tmpfs/ext4/xfs).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let versions: Vec<Vec<u8>> = (0u8..4).map(|v| vec![v; 4 << 20]).collect();
    std::fs::write(&path, &versions[0]).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let outcomes: Vec<Result<Hashed, TreeError>> = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let _ = std::fs::write(&path, &versions[i % versions.len()]);
            }
        });
        // Half as with a digest cache (stat data taken before opening),
        // half as without one (the opened file's own fstat is the baseline).
        let outcomes = (0..50)
            .map(|i| {
                if i % 2 == 0 {
                    hash_stable(&path, Some(&seen(&path)))
                } else {
                    hash_stable(&path, None)
                }
            })
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        outcomes
    });
    let mut refused = 0;
    for outcome in outcomes {
        match outcome {
            // The walk may have seen the file mid-rewrite (truncated, or
            // partly written): a prefix of one version is a state the file
            // was in. A mix of two versions never was.
            Ok(Hashed { digest, .. }) => assert!(
                versions.iter().any(|v| {
                    (digest.size as usize) <= v.len()
                        && hash_bytes(&v[..digest.size as usize]) == digest
                }),
                "a digest of bytes that never existed as a whole file: {digest}"
            ),
            Err(TreeError::ChangedWhileHashing { .. }) => refused += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    eprintln!("{refused} of 50 hashes were refused as changed");
}

#[test]
fn an_entry_that_became_a_symlink_fifo_or_socket_after_the_walk_is_refused_not_followed() {
    // Without a digest cache the walk does not stat files: the opened file
    // itself is judged. A symlink is not followed (O_NOFOLLOW), a FIFO is
    // not waited on (O_NONBLOCK: this test would hang otherwise).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("target"), b"outside bytes").unwrap();
    let link = dir.path().join("link");
    symlink(dir.path().join("target"), &link).unwrap();
    match hash_stable(&link, None) {
        Err(TreeError::ChangedWhileHashing { path }) => assert_eq!(path, link),
        other => panic!("a symlink was hashed: {other:?}"),
    }
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    match hash_stable(&fifo, None) {
        Err(TreeError::UnsupportedFileType { path, kind }) => {
            assert_eq!(path, fifo);
            assert_eq!(kind, "FIFO");
        }
        other => panic!("expected a FIFO refusal, got {other:?}"),
    }
    let socket = dir.path().join("daemon.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    match hash_stable(&socket, None) {
        Err(TreeError::UnsupportedFileType { path, kind }) => {
            assert_eq!(path, socket);
            assert_eq!(kind, "socket");
        }
        other => panic!("expected a socket refusal, got {other:?}"),
    }
    let subdir = dir.path().join("now-a-directory");
    std::fs::create_dir(&subdir).unwrap();
    assert!(matches!(
        hash_stable(&subdir, None),
        Err(TreeError::ChangedWhileHashing { .. })
    ));
}

#[test]
fn a_fault_in_a_deep_directory_is_found_by_the_parallel_walk() {
    // Faults are found by whichever walk job reads their directory; the
    // error still names the path.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..30 {
        let sub = dir.path().join(format!("d{i}")).join("inner");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("f"), b"x").unwrap();
    }
    let fifo = dir.path().join("d17/inner/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for threads in [1, 2, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        match pool.install(|| build_tree(dir.path(), None, &no_progress)) {
            Err(TreeError::UnsupportedFileType { path, kind }) => {
                assert_eq!(path, fifo);
                assert_eq!(kind, "FIFO");
            }
            other => panic!("{threads} threads: expected a FIFO refusal, got {other:?}"),
        }
    }
}
