"""Feature networks are cached in the user's cache folder ($XDG_CACHE_HOME/ae_jax, else ~/.cache/ae_jax),
never in the data root, and the console says where."""

import logging

from ae_jax.data import data_config
from ae_jax.metrics import feature_network

TINY = feature_network.Settings(steps=3, batch_size=16, channels=(4,), features=8)


def test_the_default_cache_is_the_users_cache_folder(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert feature_network.default_cache_dir() == tmp_path / "xdg" / "ae_jax" / "feature_networks"
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert feature_network.default_cache_dir() == tmp_path / "home" / ".cache" / "ae_jax" / "feature_networks"


def test_without_a_cache_dir_the_network_is_cached_there_and_the_log_says_where(
  monkeypatch, tmp_path, caplog
):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  data = data_config("synthetic", shape=(8, 8, 1), num_train=32, num_test=16, root=str(tmp_path / "data"))
  with caplog.at_level(logging.INFO, logger="ae_jax"):
    feature_network.load_or_train(data, None, TINY)
  params_path, meta_path = feature_network.cache_paths(data, TINY)
  assert params_path.parent == tmp_path / "xdg" / "ae_jax" / "feature_networks"
  assert params_path.exists() and meta_path.exists()
  assert not (tmp_path / "data").exists()  # nothing written into the data root
  assert str(params_path) in caplog.text
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="ae_jax"):
    feature_network.load_or_train(data, None, TINY)
  assert f"read from {params_path}" in caplog.text
