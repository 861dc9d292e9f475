"""QObject workers that run core operations on QThreads and report through Qt signals."""
