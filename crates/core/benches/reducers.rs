//! In-process engine benchmarks (criterion): `cargo bench -p epoch-core`.
//! The in-process engine alone; `epoch bench` measures the server side by side with the reference.

use criterion::{criterion_group, criterion_main, Criterion};
use epoch_core::bench;

fn bank() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/modules/bank.wasm")).expect("bank fixture")
}

fn engine(c: &mut Criterion) {
    let wasm = bank();
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.bench_function("empty_reducer_call", |b| b.iter_custom(|n| bench::empty_reducer(n).elapsed));
    g.bench_function("bank_transfer_fast", |b| b.iter_custom(|n| bench::transfer_fast(&wasm, n).elapsed));
    g.bench_function("point_lookup_1m_rows", |b| b.iter_custom(|n| bench::point_lookups(&wasm, 1_000_000, n).elapsed));
    g.bench_function("insert_100k_rows_in_one_reducer", |b| {
        b.iter_custom(|n| (0..n).map(|_| bench::insert_rows(&wasm, 100_000).elapsed).sum())
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
