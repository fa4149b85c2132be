"""Operations without click: apply, verify, drift; the session (the one door to the sandbox) and the lock."""
