//! KV semantics through the `etcd-client` crate. Every check runs against a fresh etcd first —
//! proving the assertions are etcd's behaviour — then against a fresh Conclave.

use conclave_tests::{Kind, Node, err, on_etcd_then_subject, status};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

fn keys(kvs: &[etcd_client::KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key_str().unwrap()).collect()
}

fn puts(keys: &[&str]) -> Vec<TxnOp> {
    keys.iter().map(|k| TxnOp::put(*k, "v", None)).collect()
}

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

#[tokio::test]
async fn error_codes_and_messages() {
    on_etcd_then_subject(
        &["--max-txn-ops", "3", "--max-request-bytes", "4096"],
        |mut c| async move {
            for v in ["1", "2", "3", "4"] {
                c.put("k", v, None).await.unwrap(); // revisions 2..=5
            }
            c.compact(3, None).await.unwrap();
            let at = |rev| Some(GetOptions::new().with_revision(rev));
            assert_eq!(
                status(c.get("k", at(2)).await),
                err(Code::OutOfRange, COMPACTED)
            );
            assert_eq!(
                status(c.get("k", at(100)).await),
                err(Code::OutOfRange, FUTURE)
            );
            assert_eq!(c.get("k", at(3)).await.unwrap().kvs()[0].value(), b"2");
            assert_eq!(
                status(c.compact(3, None).await),
                err(Code::OutOfRange, COMPACTED)
            );
            assert_eq!(
                status(c.compact(100, None).await),
                err(Code::OutOfRange, FUTURE)
            );

            let empty_key = err(Code::InvalidArgument, "etcdserver: key is not provided");
            assert_eq!(status(c.put("", "v", None).await), empty_key);
            assert_eq!(status(c.get("", None).await), empty_key);
            assert_eq!(status(c.delete("", None).await), empty_key);

            let lease = Some(PutOptions::new().with_lease(0x1234));
            let no_lease = err(Code::NotFound, "etcdserver: requested lease not found");
            assert_eq!(status(c.put("k", "v", lease).await), no_lease);

            let too_many = err(
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            );
            assert_eq!(
                status(
                    c.txn(Txn::new().and_then(puts(&["a", "b", "c", "d"])))
                        .await
                ),
                too_many
            );
            assert_eq!(
                status(c.txn(Txn::new().or_else(puts(&["a", "b", "c", "d"]))).await),
                too_many
            );
            c.txn(
                Txn::new()
                    .and_then(puts(&["a", "b", "c"]))
                    .or_else(puts(&["a", "b", "c"])),
            )
            .await
            .unwrap();

            let duplicate = err(
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            );
            assert_eq!(
                status(c.txn(Txn::new().and_then(puts(&["a", "a"]))).await),
                duplicate
            );
            let put_and_delete = vec![TxnOp::put("a", "v", None), TxnOp::delete("a", None)];
            assert_eq!(
                status(c.txn(Txn::new().and_then(put_and_delete)).await),
                duplicate
            );

            let too_large = err(Code::InvalidArgument, "etcdserver: request is too large");
            assert_eq!(
                status(c.put("big", "x".repeat(5000), None).await),
                too_large
            );
            // None of the failed requests wrote anything.
            assert_eq!(
                c.get("k", None).await.unwrap().header().unwrap().revision(),
                6
            );
        },
    )
    .await;
}

#[tokio::test]
async fn nested_txn() {
    on_etcd_then_subject(&[], |mut c| async move {
        c.put("k", "v", None).await.unwrap(); // revision 2
        let inner = Txn::new()
            .when([Compare::version("k", CompareOp::Equal, 1)])
            .and_then([TxnOp::put("k2", "v2", None), TxnOp::get("k", None)]);
        let outer = Txn::new()
            .when([Compare::value("k", CompareOp::Equal, "v")])
            .and_then([
                TxnOp::txn(inner),
                TxnOp::put("k3", "v3", None),
                TxnOp::get("k", Some(GetOptions::new().with_prefix())),
            ]);
        let resp = c.txn(outer).await.unwrap();
        assert!(resp.succeeded());
        // All writes of one txn, nested or not, share one new revision.
        assert_eq!(resp.header().unwrap().revision(), 3);
        let ops = resp.op_responses();
        let TxnOpResponse::Txn(inner) = &ops[0] else {
            panic!("expected a txn response: {ops:?}")
        };
        assert!(inner.succeeded());
        assert!(matches!(inner.op_responses()[0], TxnOpResponse::Put(_)));
        let TxnOpResponse::Get(range) = &inner.op_responses()[1] else {
            panic!("expected a get")
        };
        assert_eq!(range.kvs()[0].value(), b"v");
        let TxnOpResponse::Get(range) = &ops[2] else {
            panic!("expected a get")
        };
        assert_eq!(keys(range.kvs()), ["k", "k2", "k3"]);
        assert_eq!(range.kvs()[1].mod_revision(), 3);

        // A nested failure branch runs when its own compare fails; the outer succeeds.
        let inner = Txn::new()
            .when([Compare::mod_revision("k", CompareOp::Greater, 2)])
            .or_else([TxnOp::delete("k2", None)]);
        let resp = c
            .txn(Txn::new().and_then([TxnOp::txn(inner)]))
            .await
            .unwrap();
        let TxnOpResponse::Txn(inner) = &resp.op_responses()[0] else {
            panic!("expected a txn")
        };
        assert!(resp.succeeded() && !inner.succeeded());
        let TxnOpResponse::Delete(del) = &inner.op_responses()[0] else {
            panic!("expected a delete")
        };
        assert_eq!(del.deleted(), 1);

        // Writing one key at two levels is a duplicate.
        let inner = Txn::new().and_then([TxnOp::put("k", "x", None)]);
        let dup = Txn::new().and_then([TxnOp::put("k", "y", None), TxnOp::txn(inner)]);
        let expected = err(
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );
        assert_eq!(status(c.txn(dup).await), expected);
    })
    .await;
}

#[tokio::test]
async fn range_compares() {
    on_etcd_then_subject(&[], |mut c| async move {
        c.put("r1", "a", None).await.unwrap();
        c.put("r2", "b", None).await.unwrap();
        let mut holds =
            async |compare: Compare| c.txn(Txn::new().when([compare])).await.unwrap().succeeded();
        // A compare over a range holds when it holds for every key in it…
        assert!(holds(Compare::version("r", CompareOp::Equal, 1).with_prefix()).await);
        assert!(holds(Compare::value("r1", CompareOp::Less, "c").with_range("r3")).await);
        assert!(!holds(Compare::value("r", CompareOp::Equal, "a").with_prefix()).await);
        assert!(!holds(Compare::mod_revision("r", CompareOp::Less, 3).with_prefix()).await);
        // …and an empty range compares like a missing key: revisions and version are 0, and
        // a value compare always fails.
        assert!(holds(Compare::create_revision("x", CompareOp::Equal, 0).with_prefix()).await);
        assert!(!holds(Compare::value("x", CompareOp::Equal, "").with_prefix()).await);
        assert!(!holds(Compare::value("missing", CompareOp::NotEqual, "a")).await);
    })
    .await;
}

#[tokio::test]
async fn range_filters_count_and_more() {
    on_etcd_then_subject(&[], |mut c| async move {
        for key in ["r1", "r2", "r3", "r4", "r5"] {
            c.put(key, "v", None).await.unwrap(); // r1 at revision 2 … r5 at 6
        }
        c.put("r2", "v2", None).await.unwrap(); // revision 7: r2 mod 7, create 3
        let get = |opts: GetOptions| {
            let mut c = c.clone();
            async move { c.get("r", Some(opts.with_prefix())).await.unwrap() }
        };

        let r = get(GetOptions::new().with_limit(2)).await;
        assert_eq!(
            (keys(r.kvs()), r.count(), r.more()),
            (vec!["r1", "r2"], 5, true)
        );
        let r = get(GetOptions::new().with_limit(5)).await;
        assert_eq!((r.kvs().len(), r.count(), r.more()), (5, 5, false));
        let r = get(GetOptions::new().with_count_only()).await;
        assert_eq!((r.kvs().len(), r.count(), r.more()), (0, 5, false));
        let r = get(GetOptions::new().with_keys_only().with_limit(1)).await;
        assert_eq!(
            (keys(r.kvs()), r.kvs()[0].value(), r.more()),
            (vec!["r1"], &b""[..], true)
        );

        let r = get(GetOptions::new().with_min_mod_revision(5)).await;
        assert_eq!(keys(r.kvs()), ["r2", "r4", "r5"]);
        let r = get(GetOptions::new().with_max_mod_revision(4)).await;
        assert_eq!(keys(r.kvs()), ["r1", "r3"]);
        let r = get(GetOptions::new()
            .with_min_create_revision(4)
            .with_max_create_revision(5))
        .await;
        assert_eq!(keys(r.kvs()), ["r3", "r4"]);
        // count is the size of the range before filtering; limit applies after filtering.
        let r = get(GetOptions::new().with_min_mod_revision(5).with_limit(2)).await;
        assert_eq!(
            (keys(r.kvs()), r.count(), r.more()),
            (vec!["r2", "r4"], 5, true)
        );
        // Filters see the store as of the requested revision.
        let r = get(GetOptions::new().with_min_mod_revision(3).with_revision(6)).await;
        assert_eq!(
            (keys(r.kvs()), r.kvs()[0].mod_revision(), r.count()),
            (vec!["r2", "r3", "r4", "r5"], 3, 5)
        );
    })
    .await;
}

#[tokio::test]
async fn response_headers() {
    on_etcd_then_subject(&[], |mut c| async move {
        let members = c.member_list().await.unwrap();
        let ids = members.header().unwrap();
        let (cluster_id, member_id) = (ids.cluster_id(), ids.member_id());
        assert_ne!(cluster_id, 0);
        assert_eq!(
            members.members().iter().map(|m| m.id()).collect::<Vec<_>>(),
            [member_id]
        );

        let put = c.put("k", "v", None).await.unwrap();
        let get = c.get("k", None).await.unwrap();
        let missing = c
            .get("missing", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        let del = c.delete("k", None).await.unwrap();
        let noop = c.delete("k", None).await.unwrap();
        let txn = c.txn(Txn::new()).await.unwrap();
        let headers = [
            put.header(),
            get.header(),
            missing.header(),
            del.header(),
            noop.header(),
            txn.header(),
        ];
        let revisions: Vec<i64> = headers.iter().map(|h| h.unwrap().revision()).collect();
        // A delete bumps the revision only when it removes something; reads never do.
        assert_eq!(revisions, [2, 2, 2, 3, 3, 3]);
        for h in headers.map(Option::unwrap) {
            assert_eq!((h.cluster_id(), h.member_id()), (cluster_id, member_id));
            assert_ne!(h.raft_term(), 0);
        }
    })
    .await;
}

#[tokio::test]
async fn acknowledged_writes_survive_kill9_and_restart() {
    for kind in [Kind::Etcd, Kind::subject()] {
        let mut node = Node::start(kind, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        let mut c = Client::connect([node.endpoint()], None)
            .await
            .expect("connect");
        for i in 0..20 {
            c.put(format!("k{i:02}"), format!("v{i}"), None)
                .await
                .unwrap(); // revisions 2..=21
        }
        c.compact(10, None).await.unwrap();
        node.restart().unwrap_or_else(|e| panic!("{e:#}"));

        let mut c = Client::connect([node.endpoint()], None)
            .await
            .expect("connect");
        let r = c
            .get("k", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let last = &r.kvs()[19];
        let state = (
            r.count(),
            r.header().unwrap().revision(),
            last.key_str().unwrap(),
            last.mod_revision(),
        );
        assert_eq!(
            state,
            (20, 21, "k19", 21),
            "{kind:?} after kill -9 and restart"
        );
        let old = c.get("k00", Some(GetOptions::new().with_revision(9))).await;
        assert_eq!(
            status(old),
            err(Code::OutOfRange, COMPACTED),
            "{kind:?}: compaction survives restart"
        );
        assert_eq!(
            c.put("k", "v", None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision(),
            22
        );
    }
}

#[tokio::test]
async fn writes_over_the_backend_quota_are_refused() {
    on_etcd_then_subject(&["--quota-backend-bytes", "1"], |mut c| async move {
        assert_eq!(
            status(c.put("k", "v", None).await),
            err(
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded"
            )
        );
        assert!(
            c.get("k", None).await.unwrap().kvs().is_empty(),
            "reads still work"
        );
    })
    .await;
}
