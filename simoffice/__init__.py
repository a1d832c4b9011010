"""The simulated office: a phone, the box and a small internet in network namespaces, the demo and its certificates.

Product code never imports this package; `skillspot demo` and the tests do."""
