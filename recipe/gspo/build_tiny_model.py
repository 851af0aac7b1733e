"""Build a tiny random-initialised Qwen2 and a byte-level BPE tokenizer trained on a prepared prompt file.

    python recipe/gspo/build_tiny_model.py TRAIN_PARQUET MODEL_DIR [SFT_STEPS]

Byte-level BPE (every string encodes, decode round-trips), trained on the prompts in a few seconds, with a ChatML
template so data.apply_chat_template=auto renders prompts as it does for Qwen2.5. For CPU smoke runs of recipes.
With SFT_STEPS > 0 the model is then fitted for that many steps to answer each prompt with
``\boxed{<ground truth>}``, so its samples contain boxed answers (some right, some wrong) and the math reward's
verifier really runs; with 0 it stays random.
"""

from __future__ import annotations

import sys


def fit_boxed_answers(model, tokenizer, rows: list[dict], steps: int) -> float:
    """A few AdamW steps of supervised fitting on prompt -> ``\boxed{ground truth}`` (loss on the answer only);
    returns the last loss."""
    import torch

    examples = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer("\\boxed{" + row["ground_truth"] + "}", add_special_tokens=False)["input_ids"]
        ids = prompt_ids + answer_ids + [tokenizer.eos_token_id]
        examples.append((torch.tensor(ids), len(prompt_ids)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        batch = [examples[i] for i in torch.randint(len(examples), (8,), generator=generator).tolist()]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, prompt_len) in enumerate(batch):
            input_ids[row, :len(ids)], mask[row, :len(ids)] = ids, 1
            labels[row, prompt_len:len(ids)] = ids[prompt_len:]
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


def main(train_file: str, model_dir: str, sft_steps: int = 0) -> None:
    import pyarrow.parquet as pq
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rows = pq.read_table(train_file, columns=["prompt", "ground_truth"]).to_pylist()
    texts = [message["content"] for row in rows for message in row["prompt"]]
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
    fitted = ""
    if sft_steps > 0:
        loss = fit_boxed_answers(model, tokenizer, rows, sft_steps)
        fitted = f", fitted {sft_steps} steps to boxed answers (loss {loss:.3f})"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    print(f"tiny model: {model_dir} (vocab {len(tokenizer)}, {model.num_parameters()} parameters{fitted})")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 0)
