"""benchmarks/memory_ops.py runs at a small size: its synthetic memory is a valid memory state and the extension
agrees with the reference on every op it times."""


def test_memory_ops_benchmark_runs_and_finds_extension_equal_to_reference(run_benchmark):
    rows = run_benchmark("memory_ops", "--points", "3000", "--repeat", "1")["rows"]
    assert [row["op"].split()[0] for row in rows] == ["project_zbuffer", "depth_consistency", "segment_fuse",
                                                     "LatentSpatialMemory.read"]
    assert all(row["equal"] for row in rows)
