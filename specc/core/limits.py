"""Bounds on what a spec may ask for, in one module below every stage that enforces them.

The checker enforces most of them (`check`); the builder and the data stage read some too (`build`, `data`),
and `errors.brief` stops at MAX_VALUE_DEPTH. README: "Hostile input"."""

# Bounds on what a model expands to (README: "Hostile input"), so that `repeat 10**9`, blocks calling
# blocks exponentially or thousands of nested calls end in a located error, not in hours or a crash.
# Layers once blocks and `repeat` are expanded: a ResNet of 200 basic blocks (1,405 layers) fits, and `check` of the
# largest allowed model takes about 2 s (benchmarks/scaling.py, linear in layers); Keras builds 10,000 without
# trouble, in about 10 s, so the bound is about time, not a limit of Keras.
MAX_LAYERS = 2_000
# Layers that build several Keras layers inside count as more than one towards MAX_LAYERS, by what checking them costs
# (`tests/test_spec_bounds.py` measures it, 300 of a kind: a dense layer 1.4 ms; attention 8.2, group-query attention
# 6.4, bidirectional LSTM 8.9, a 3-D convolution 4.3, LSTM 2.5, GRU 2.8, time-distributed dense 2.3 ms). At 2,000
# units a model of any one kind builds in under about 4 s on 2 cores, and `specc check` ends in under 10 s.
# A wrapper counts as its own weight plus the layer it wraps (`bidirectional(lstm(...))`: 4 + 2).
LAYER_WEIGHTS = {"MultiHeadAttention": 6, "GroupQueryAttention": 6, "Bidirectional": 4,
                 "Conv3D": 3, "Conv3DTranspose": 3, "ConvLSTM1D": 3, "ConvLSTM2D": 3, "ConvLSTM3D": 3,
                 "LSTM": 2, "GRU": 2, "SimpleRNN": 2, "RNN": 2, "EinsumDense": 2}
MAX_REPEAT = 10_000  # the count of one `repeat`
MAX_EXPANSION = 100_000  # block calls and `repeat` rounds in all (bodies without layers count too)
MAX_NESTING = 64  # blocks, `repeat` and `parallel` inside one another, through block calls
MAX_NUMBER = 2**63 - 1  # the largest whole number arithmetic may make, as in the parser
MAX_ERRORS = 100  # errors reported for one file; checking stops at the next
# A value (a `let` constant, an inline `x: [...]`, an argument) has at most this many elements and levels of nesting,
# counted as it is built: a list may name earlier constants, so 28 short `let`s could otherwise stand for 2**28
# numbers that every later step (checks, `emit`, the data stage) would walk or copy. A spec can write out about
# 50,000 numbers (MAX_TOKENS); 20 times that leaves room to reuse a written row.
MAX_VALUE_ELEMENTS = 1_000_000
MAX_VALUE_DEPTH = 100  # as deep as the parser lets a spec write brackets (`syntax.MAX_DEPTH`), which every stage takes
# The model's layer arguments summed over every layer once blocks and `repeat` are expanded (each layer's own are
# bounded above): what `emit` writes out and `diff` compares.
MAX_ARGUMENT_ELEMENTS = 4_000_000
MAX_VOCABULARY = 2**24  # tokens of a vocabulary specc trains (`vocab_size`): BERT has 30,522, GPT-4 about 100,000
MAX_EXAMPLE_VALUES = 2**28  # values in one example of an input (1 GiB of float32): XLA aborts or memory runs out past it
