"""What every run of a flow needs: halts, the graceful stop, renewal, run names, delivery."""
