"""The rate-limit room of the core: rules, counting and verdicts (:mod:`.core`), whose
bucket a request is counted in (:mod:`.identity`) and which address it comes from
(:mod:`.client_ip`)."""
