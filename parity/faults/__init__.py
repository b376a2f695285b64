"""The catalogue of porting bugs (`parity faults`) and how the harness's verdict on each is judged."""
