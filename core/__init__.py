"""The keel library: data, drift, training, evaluation, the gate and the store. No Textual, no flows."""
