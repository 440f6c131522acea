"""`make interop`: the real Claude Code and Codex CLIs against two gateway replicas.

Not part of `make test` or CI: it downloads the CLIs from npm (hundreds of MB). See
`python -m interop --help` and the README section "Real agent harnesses".
"""
