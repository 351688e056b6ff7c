"""Stage 2 of the pipeline: LLM-written persona backgrounds with the consistency gate.

spec              the ``background:`` section of a PopulationSpec (words, gate fields, tries)
prompts           the writer and reader chats (shared system prefix for the prefix cache)
write             ``add_backgrounds``: write, read the facts back, regenerate contradictions
gate              parse the reader's answers and compare them with the persona row
generate          a whole population into a folder, shard by shard, resumable
echo_backend      ``kind: echo``, a rule-based non-LLM backend for fast tests

This ``__init__`` imports nothing (modules import from ``crowdlab.personas.sampling``).
"""
