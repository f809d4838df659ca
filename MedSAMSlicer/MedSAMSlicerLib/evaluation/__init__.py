"""How good and how fast: metrics, the published prompt protocols, evaluation of models on labelled
cohorts and its report, the simulated annotation study, the naive published pipeline and the
benchmark. Imports ``volume`` and the layers below."""
