"""The sandbox's SAT keeps the same facts whether it reads them from the stamped XML or from the
document the stamp endpoint has already parsed."""

from timbra_shared.cfdi import build, load_csd, parse_xml, seal
from timbra_shared.cfdi.models import CfdiRelacionados
from timbra_shared.cfdi.testing import make_csd, sample_invoice
from timbra_shared.cfdi.tfd import stamp
from timbra_shared.sandbox_pac.sat import facts_of, facts_of_root


def test_facts_of_the_parsed_document_match_those_of_the_stamped_xml():
    cer, key = make_csd()
    sealed = seal(build(sample_invoice(TipoDeComprobante="E", CfdiRelacionados=[CfdiRelacionados(TipoRelacion="01", UUIDs=["5fb2822e-396d-4725-8521-cdc4bdd20ccf"])])),
                  load_csd(cer, key, "12345678a"))
    pac_cer, pac_key = make_csd(rfc="SAT970701NN3")
    root = parse_xml(sealed)
    stamped, tfd = stamp(root, load_csd(pac_cer, pac_key, "12345678a"), rfc_prov_certif="SAT970701NN3")

    facts = facts_of_root(root, tfd.UUID)
    assert facts == facts_of(stamped.decode())
    assert facts["uuid"] == tfd.UUID.upper() and facts["tipo"] == "E"
    assert facts["related"] == [{"uuid": "5FB2822E-396D-4725-8521-CDC4BDD20CCF", "tipo": "01"}]
