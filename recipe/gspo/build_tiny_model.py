"""Build a tiny random-initialised Qwen2 and a byte-level BPE tokenizer trained on a prepared prompt file.

    python recipe/gspo/build_tiny_model.py TRAIN_PARQUET MODEL_DIR

Byte-level BPE (every string encodes, decode round-trips), trained on the prompts in a few seconds, with a ChatML
template so data.apply_chat_template=auto renders prompts as it does for Qwen2.5. For CPU smoke runs of recipes:
the model learns nothing useful, it only exercises the pipeline.
"""

from __future__ import annotations

import sys


def main(train_file: str, model_dir: str) -> None:
    import pyarrow.parquet as pq
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    prompts = pq.read_table(train_file, columns=["prompt"])["prompt"].to_pylist()
    texts = [message["content"] for messages in prompts for message in messages]
    texts.append("\\boxed{} Answer: 0123456789 \\frac{}{} \\sqrt{} ( ) [ ] , . = + - ^ _ x y \\pi")
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=512, special_tokens=special,
                                                           show_progress=False,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                        additional_special_tokens=["<|im_start|>"], padding_side="left",
                                        model_max_length=4096, clean_up_tokenization_spaces=False)
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    print(f"tiny model: {model_dir} (vocab {len(tokenizer)}, {model.num_parameters()} parameters)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    main(sys.argv[1], sys.argv[2])
