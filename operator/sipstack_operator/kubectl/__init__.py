"""`kubectl sipstack`: the kubectl plugin (console script `kubectl-sipstack`).

- table.py: pure: AsteriskConnectors -> the fleet table (`status`).
- cluster.py: the plugin's own API client (the user's kubeconfig or, in a pod,
  its service account): list/get connectors, patch a request annotation.
- main.py: the commands (`status`, `resend`, `dead-letters`).

It never talks to an agent: `resend` and `dead-letters` write the request
annotation (sipstack_operator.controlreq) and wait for the operator's answer in
status.lastRequest.
"""
