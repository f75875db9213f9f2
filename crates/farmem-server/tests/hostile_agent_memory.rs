//! Agent working memory: requests whose kernels would hold far more than the server's capacity
//! in temporaries (an argsort, a gather, a row filter and rank counts naming one object many
//! times, a hash-table get naming one large value many times) are refused with a typed out-of-capacity error before they allocate, and the server's
//! peak resident set (`VmHWM`, read from /proc) stays within its capacity plus a small fixed
//! overhead. A request that fits still runs.

mod support;

use farmem_proto::agent::{
    AgentMessage, ArgsortArgs, Cmp, ElemType, FilterRowsArgs, GatherArgs, GatherSumArgs,
    GroupByArgs, GroupRankArgs, HtKeysArgs, HtPutArgs, OutSpec, Predicate, RankQuery, Scalar,
    VecRef, op,
};
use farmem_proto::{ErrorCode, Request, Response, encode_request};
use support::ServerProc;
use support::raw::{Raw, error_code, peak_rss, rss};

const CAPACITY: u64 = 128 << 20;
/// The server's own memory beyond what it stores: code, thread stacks, buffers, the slab's
/// slack. Far below what any request here would take unbounded (0.5 to 1.5 GiB).
const OVERHEAD: u64 = 96 << 20;

fn request(id: u64, req: &Request<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    encode_request(&mut b, id, req);
    b
}

fn compute(c: &mut Raw, id: u64, aop: u16, args: &[u8]) -> Option<u16> {
    let req = Request::Compute {
        route: 1,
        op: aop,
        args,
    };
    let a = c.call(&request(id, &req));
    assert_eq!(a.0.req_id, id);
    error_code(&a)
}

fn out(ids: u64) -> OutSpec {
    OutSpec {
        chunk_elems: 1 << 20,
        ids: (1000..1000 + ids).collect(),
    }
}

#[test]
fn agent_temporaries_are_charged_and_the_server_stays_within_capacity() {
    let cap = format!("{}MiB", CAPACITY >> 20);
    let server = ServerProc::start(&["--capacity", &cap]);
    let pid = server.pid().unwrap();
    let mut c = Raw::hello(&server.addr);
    // One 8 MiB object of bytes (8 Mi u8 elements; all zero) and one 1 MiB of u64 indices.
    let bytes = vec![0u8; 8 << 20];
    let put = request(
        1,
        &Request::Put {
            id: 1,
            data: &bytes,
        },
    );
    assert_eq!(error_code(&c.call(&put)), None);
    let idx = vec![0u8; 1 << 20];
    let put = request(2, &Request::Put { id: 2, data: &idx });
    assert_eq!(error_code(&c.call(&put)), None);
    // A server-side table holding one 1 MiB value.
    let put = HtPutArgs {
        table: 3,
        return_old: false,
        entries: vec![(b"big".to_vec(), vec![7u8; 1 << 20])],
    }
    .encode();
    assert_eq!(compute(&mut c, 3, op::HT_PUT, &put), None);
    let base = rss(pid);
    let named = |id: u64, ty: ElemType, count: u32, times: usize| VecRef {
        ty,
        chunks: vec![(id, count); times],
    };
    let all = Predicate {
        cmp: Cmp::Ge,
        a: Scalar::U(0),
        b: Scalar::U(0),
    };
    let hostile: Vec<(&str, u16, Vec<u8>)> = vec![
        (
            // 64 Mi values: their widened copy, the permutation and its bytes (1.5 GiB).
            "argsort",
            op::VEC_ARGSORT,
            ArgsortArgs {
                vec: named(1, ElemType::U8, 8 << 20, 8),
                out: out(64),
            }
            .encode(),
        ),
        (
            // 32 Mi indices: read, bucketed and gathered before they are objects (0.9 GiB).
            "gather",
            op::VEC_GATHER,
            GatherArgs {
                src: named(1, ElemType::U8, 8 << 20, 1),
                idx: named(2, ElemType::U64, 1 << 17, 256),
                out: out(32),
            }
            .encode(),
        ),
        (
            // 32 Mi segment offsets read whole, and their sums (0.75 GiB).
            "gather sum",
            op::VEC_GATHER_SUM,
            GatherSumArgs {
                values: named(1, ElemType::F64, 1 << 20, 1),
                idx: named(2, ElemType::U32, 1 << 18, 1),
                offsets: named(2, ElemType::U64, 1 << 17, 256),
                scale: 1.0,
                shift: 0.0,
                out: out(32),
            }
            .encode(),
        ),
        (
            // 64 Mi matching rows, numbered (0.5 GiB).
            "filter rows",
            op::VEC_FILTER_ROWS,
            FilterRowsArgs {
                vec: named(1, ElemType::U8, 8 << 20, 8),
                pred: all,
                starts: vec![0; 8],
            }
            .encode(),
        ),
        (
            // 2,000 queries of 65,536 buckets each (1 GiB of counters) in a 70 KB request.
            "rank counts",
            op::VEC_GROUP_RANK,
            GroupRankArgs {
                group: GroupByArgs {
                    keys: named(1, ElemType::U8, 16, 1),
                    values: named(1, ElemType::U8, 16, 1),
                    limit: 16,
                },
                queries: (0..2000u64)
                    .map(|k| RankQuery {
                        key: Scalar::U(k % 256),
                        lo: 0,
                        hi: 65_535,
                        values: false,
                        shift: 0,
                    })
                    .collect(),
            }
            .encode(),
        ),
        (
            // The 1 MiB value 600 times in one answer (600 MiB).
            "table get",
            op::HT_GET,
            HtKeysArgs {
                table: 3,
                keys: vec![b"big".to_vec(); 600],
            }
            .encode(),
        ),
    ];
    let mut id = 10;
    let mut codes = Vec::new();
    for (name, aop, args) in &hostile {
        id += 1;
        codes.push((name, compute(&mut c, id, *aop, args)));
    }
    let peak = peak_rss(pid);
    assert!(
        peak < base + CAPACITY + OVERHEAD,
        "the server's resident set peaked at {} MiB ({} MiB before the requests, capacity {} MiB)",
        peak >> 20,
        base >> 20,
        CAPACITY >> 20
    );
    for (name, code) in codes {
        assert_eq!(
            code,
            Some(ErrorCode::OutOfCapacity as u16),
            "{name}: answered with {code:?}"
        );
    }
    // Nothing stays charged (but the kept answers of the refused requests), and an operation
    // that fits runs.
    let st = c.stats(id + 1);
    let objects = (8 << 20) + (1 << 20) + 2 * 32 + (1 << 20);
    assert!(
        (objects..objects + 8192).contains(&st.session_used_bytes),
        "{} bytes charged",
        st.session_used_bytes
    );
    let small = ArgsortArgs {
        vec: named(1, ElemType::U8, 1 << 16, 1),
        out: out(1),
    }
    .encode();
    let req = Request::Compute {
        route: 1,
        op: op::VEC_ARGSORT,
        args: &small,
    };
    let a = c.call(&request(id + 2, &req));
    assert!(
        matches!(
            Response::decode(a.0.op, a.0.flags, &a.1),
            Ok(Response::Data(_))
        ),
        "{:?}",
        error_code(&a)
    );
}
