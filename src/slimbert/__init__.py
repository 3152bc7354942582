"""slimbert: make BERT-style Transformers small and fast without losing their accuracy."""

from slimbert.checkpoint import load_config, load_model, load_tokenizer, save_checkpoint
from slimbert.compress.export import export_hf
from slimbert.config import BertConfig, BiLSTMConfig, CNNConfig
from slimbert.errors import CheckpointError, DataError, SlimbertError
from slimbert.models import build_model
from slimbert.models.bert import BertForMaskedLM, BertForSequenceClassification, BertModel
from slimbert.models.outputs import ModelOutput
from slimbert.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "BertConfig", "BiLSTMConfig", "CNNConfig", "BertForMaskedLM", "BertForSequenceClassification", "BertModel", "CheckpointError",
    "DataError", "ModelOutput", "SlimbertError", "Tokenizer", "build_model", "export_hf",
    "load_config", "load_model", "load_tokenizer", "save_checkpoint",
]
