"""Learning DNPU control voltages through a frozen surrogate, in torch (training only).

    dnpu_nodes      DNPUNodes: one layer of K DNPU nodes with learnable control voltages, T trials
    normalisation   RunningStandardisation between layers, DecisionNode (batch norm + logistic)
    classifiers     trial-batched two-input classifiers (one DNPU, a small NN) and DNPUNet
    losses          BCE, negative Fisher criterion and cross-entropy, per trial
    logistic        a logistic output neuron fitted after training (Newton)
    trials          TrialAdam (trials can be dropped mid-run) and trial chunking
    core_surrogate  CoreSurrogate: the surrogate's forward and input gradient on the C core
    export          trained layers as core.network layer descriptions (for core.io.write_network)

Importing this package imports nothing; each module imports torch.
"""
