"""The miniature world: arithmetic word problems, an oracle teacher, a tokenizer and tiny models."""
