"""Timbra's sandbox PAC: a real HTTP server on loopback with a real PAC's contract (modelled on
SW Sapien's stamp API), used by ``make up`` and by the tests."""
