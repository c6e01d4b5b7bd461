"""What operators act on and watch: dead letters, their replay, and the Prometheus metrics."""
