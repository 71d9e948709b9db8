"""Files: the erasure file and its metadata, the stock-LoRA export, the 1/N merge of several files.

They read and write what `adapters/` holds, for a base model named by `model/`.
"""
