"""Error-contribution maps of a decoder's forward pass (issue 14): per kernel and depth, how much
error each kernel adds and how much it carries, against a float64 run of the same model."""
