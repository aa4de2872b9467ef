"""Run configuration: YAML files in this folder, validated into typed settings by `schema`."""
from configs.schema import Config, ConfigError, load_config, validate

__all__ = ["Config", "ConfigError", "load_config", "validate"]
