"""Stage 3 of the pipeline: the population report card (is the population what the spec asked for?).

card              the card's data (fit, distributions, constraints, texts, examples) and JSON/HTML files
card_html         figures (matplotlib) and the jinja2 page
text_stats        distinct-n, duplicates and MinHash near-duplicates over a million backgrounds
"""
