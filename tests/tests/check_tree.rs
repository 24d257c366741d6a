//! CheckTree: the one question a client asks before FindMissingBlobs, and
//! that a build's own completeness check must agree with.

use attest::client::BlobSource;
use attest::Client;
use attest_e2e::TestDaemon;

/// A small tree: two directories, three files.
fn small_tree(daemon: &TestDaemon) -> std::path::PathBuf {
    let src = daemon.dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"a\n").unwrap();
    std::fs::write(src.join("b.txt"), b"b\n").unwrap();
    std::fs::write(src.join("sub/c.txt"), b"c\n").unwrap();
    src
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_is_complete_only_once_every_blob_is_there_and_stays_so_once_built() {
    let daemon = TestDaemon::start();
    let src = small_tree(&daemon);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let tree = attest_tree::build_tree(&src, None, &|_| {}).unwrap();
    assert!(!client.tree_complete(&tree.root).await.unwrap());

    // Every directory message and all files but one: still incomplete.
    let held_back = tree
        .files
        .iter()
        .find(|f| f.path == src.join("sub/c.txt"))
        .unwrap();
    let mut blobs: Vec<_> = tree
        .directories
        .iter()
        .map(|(d, b)| (*d, BlobSource::Bytes(b.clone())))
        .collect();
    blobs.extend(
        tree.files
            .iter()
            .filter(|f| f.path != held_back.path)
            .map(|f| (f.digest, BlobSource::File(f.path.clone()))),
    );
    client.upload(blobs, |_| {}).await.unwrap();
    assert!(
        !client.tree_complete(&tree.root).await.unwrap(),
        "a tree missing one file's blob was reported complete"
    );

    client
        .upload(
            vec![(held_back.digest, BlobSource::File(held_back.path.clone()))],
            |_| {},
        )
        .await
        .unwrap();
    assert!(client.tree_complete(&tree.root).await.unwrap());

    // Built once (so materialized, answered from its file list): complete,
    // and an `attest run` of it uploads nothing.
    let work = daemon.work_dir("work");
    let out = daemon.attest_run(
        &work,
        &src,
        &["--out", "out", "--", "sh", "-c", "cat a.txt > out"],
    );
    assert!(out.status.success());
    assert!(client.tree_complete(&tree.root).await.unwrap());

    // A digest that names no tree is not complete; one that names a blob
    // that is not a Directory message is an error, as a build of it is.
    let not_a_tree = held_back.digest;
    let stranger = attest_tree::hash_bytes(b"no such tree");
    assert!(!client.tree_complete(&stranger).await.unwrap());
    match client.tree_complete(&not_a_tree).await {
        Err(attest::ClientError::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}")
        }
        other => panic!("a file blob was taken for a tree: {other:?}"),
    }
}
