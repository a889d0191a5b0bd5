"""fabric bench: the fabric measured against HTTP REST, NATS and Zenoh."""
