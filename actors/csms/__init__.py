"""Local and cloud CSMS actors."""
