import numpy as np
import pytest

from alignflow.model.gguf_loader import ModelLoadError, bundled_gguf_path, unpermute_rows


def llama_cpp_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf's permutation of q/k rows (the transform to undo)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("n_head,head_dim", [(9, 64), (3, 64), (2, 8)])
def test_unpermute_inverts_llama_cpp(n_head, head_dim):
    w = np.random.default_rng(0).normal(size=(n_head * head_dim, 16)).astype("float32")
    np.testing.assert_array_equal(unpermute_rows(llama_cpp_permute(w, n_head), n_head), w)


def test_bundled_file_is_found_and_unknown_name_is_clear():
    path = bundled_gguf_path("smollm2-135m-instruct")
    assert path.name.endswith(".gguf") and path.stat().st_size > 90_000_000
    with pytest.raises(ModelLoadError, match="unknown bundled model"):
        bundled_gguf_path("gpt-5")


def test_architecture_read_from_metadata(gguf_contents):
    c = gguf_contents.config
    assert (c["num_layers"], c["hidden_dim"], c["num_query_heads"], c["num_key_value_heads"]) == (30, 576, 9, 3)
    assert (c["intermediate_dim"], c["vocabulary_size"], c["rope_max_wavelength"]) == (1536, 49152, 100000.0)
