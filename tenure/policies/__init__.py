"""The policy engine and the policy file format."""
