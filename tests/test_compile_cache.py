"""The compile cache's key names everything that determines a build."""

from dnsrec_edge.compile.cache import cache_key


def test_the_key_names_the_thread_count_a_build_was_made_for(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not really a model, only bytes to hash")
    plain = cache_key(onnx, "x86_64-avx512")
    assert cache_key(onnx, "x86_64-avx512", threads=None) == plain  # older entries still hit
    one, two = (
        cache_key(onnx, "x86_64-avx512", threads=1),
        cache_key(onnx, "x86_64-avx512", threads=2),
    )
    assert len({plain, one, two}) == 3
    assert cache_key(onnx, "arm64") != plain and cache_key(onnx, "x86_64-avx512", batch=8) != plain
