"""Small configurations of every zoo architecture, shared by tests."""

ZOO = {
    "rnn": dict(hidden=12),
    "gru": dict(hidden=16, layers=2),
    "lstm": dict(hidden=16),
    "mingru": dict(hidden=16, layers=2),
    "minlstm": dict(hidden=16),
    "lmu": dict(hidden=16, memory_d=2, order=6, theta=20.0),
    "lmu_dense": dict(hidden=16, memory_d=2, order=6, theta=20.0, hidden_cell="dense", input_to_hidden=True),
    "lmu_full": dict(
        hidden=12,
        memory_d=3,
        order=4,
        theta=9.0,
        hidden_to_memory=True,
        memory_to_memory=True,
        input_to_hidden=True,
        memory_bias=True,
        discretizer="euler",
    ),
    "s4d": dict(hidden=12, modes=6, layers=2),
    "s4d_real": dict(hidden=10, modes=4, layers=1, complex_modes=False, readout="last"),
    "lif": dict(hidden=16),
    "lif_rec": dict(hidden=16, recurrent=True, reset="zero"),
    "l2mu": dict(hidden=16, encoder_size=8),
    "l2mu_syn": dict(hidden=12, encoder_size=6, neuron="synaptic"),
    "lmuformer": dict(dim=16, memory_d=2, order=4),
    "lmuformer_spiking": dict(dim=16, memory_d=2, order=4, spiking=True),
}

# how a case's int8 error is judged: recurrent (saturating gates), memory (linear state: LMU, S4D), spiking
FAMILY = {
    "rnn": "recurrent",
    "gru": "recurrent",
    "lstm": "recurrent",
    "mingru": "recurrent",
    "minlstm": "recurrent",
    "lmu": "memory",
    "lmu_dense": "memory",
    "lmu_full": "memory",
    "s4d": "memory",
    "s4d_real": "memory",
    "lmuformer": "memory",
    "lif": "spiking",
    "lif_rec": "spiking",
    "l2mu": "spiking",
    "l2mu_syn": "spiking",
    "lmuformer_spiking": "spiking",
}
assert set(FAMILY) == set(ZOO)


def arch_of(case: str) -> str:
    return case.split("_")[0]


def build(case: str, in_features: int = 6, n_classes: int = 5, seed: int = 0):
    import torch

    from edgeseq.nn import build_model

    torch.manual_seed(seed)
    model = build_model(arch_of(case), in_features, n_classes, **ZOO[case])
    # non-trivial batch-norm statistics so folding/normalisation paths are exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()
