"""Distributed engines for the data jobs (make-shards, predict, embed): see :mod:`zoobot_tf.engines.beam`."""
