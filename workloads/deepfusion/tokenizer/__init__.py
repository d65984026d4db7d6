"""The shared tokenizer files (SmolLM2-135M-Instruct BPE); extract.py documents how they were made."""
