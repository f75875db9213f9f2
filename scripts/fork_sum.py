"""A far numpy array summed by the parent, then by a multiprocessing worker started with fork.

Run as: farmem-run --local-mem 64MiB -- python3 scripts/fork_sum.py"""
import multiprocessing as mp, numpy as np, time
n = 32 * 1024 * 1024                      # 256 MiB float64, 4x a 64 MiB budget
a = np.ones(n)
def whole(_):
    t = time.perf_counter(); s = float(a.sum()); return s, time.perf_counter() - t
if __name__ == "__main__":
    ctx = mp.get_context("fork")
    for i in range(3):
        t = time.perf_counter(); s = float(a.sum()); tp = time.perf_counter() - t
        with ctx.Pool(1) as pool:
            (sc, tc), = pool.map(whole, [0])
        assert s == sc == n
        print(f"parent sum {tp:.3f}s  forked child sum {tc:.3f}s  ratio {tc/tp:.2f}", flush=True)
