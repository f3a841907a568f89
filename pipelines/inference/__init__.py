"""A trained checkpoint applied to the videos of a store: the checkpoint is loaded, its preprocessing checked
against the store's, the test clips are cut and run through the network in chunks; the STA probe keeps each
attention module's weights on the way; the feature store caches a backbone's map of every video. It may import
``core``, ``data`` and ``scoring``, ``mars_sta`` and ``flow``."""
