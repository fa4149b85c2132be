"""Working with manifests as files in a repository: export, clone, notifications."""
