"""Model dimensions the tests share (from the models' own config.json)."""

# SmolLM2-135M-Instruct, the embedded model.
SMOLLM2_CONFIG = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
}
