"""Fleet: merge many hosts' probe reports into one view (`kcheck fleet report`), and the files
that run the probe across a fleet: an Ansible playbook and role, Kubernetes manifests."""
