"""The FaultTolerantService API: its typed spec (`spec`) and the CRD generated from it (`crd`)."""
