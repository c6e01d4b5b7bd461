"""What operators act on: dead letters and their replay."""
