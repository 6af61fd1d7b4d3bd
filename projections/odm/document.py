"""The parts every ODM export shares: the root element, the study's metadata, AdminData.

Writing is incremental (``lxml.etree.xmlfile``): containers are opened and closed as the rows
stream by, and each small subtree (an item group, one transaction) is built and written at
once, so memory stays flat whatever the size of the study.

Elements are created without a namespace and written inside the root, which declares the ODM
namespace as the default: serialised, they carry no prefix and no repeated ``xmlns``, and a
parser reads them in the ODM namespace (a qualified subtree would repeat the declaration on
every element written).
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import IO, TYPE_CHECKING

from lxml import etree

from domain.study import StudyDefinition
from projections.odm.metadata import COMMON_EVENT, SUBJECT, Catalogue, CodeList, Item
from projections.streaming import utc_text

if TYPE_CHECKING:
    # The writer xmlfile yields; lxml names it only in its type stubs.
    from lxml.etree._serializer import _IncrementalFileWriter as Writer

NS = "http://www.cdisc.org/ns/odm/v1.3"
ODM_VERSION = "1.3.2"
MDV_OID = "MDV.1"  # a study's definition is registered once and never changes
# Part 11 / Annex 11 are the regulations the product's e-signatures are built to.
LEGAL_REASON = "Electronic signature under 21 CFR Part 11 and EU GMP Annex 11"


def _source_version() -> str:
    try:
        return version("trialledger")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# Characters XML 1.0 cannot carry, even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: str) -> str:
    """``value`` with each character XML cannot hold written as a visible ``\\u`` escape with
    four hex digits: stored data is never rewritten, so an export must carry whatever was
    accepted."""
    if _NOT_XML.search(value) is None:
        return value
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def element(tag: str, attrib: dict[str, str] | None = None, text: str | None = None,
            children: Iterable[etree._Element] = ()) -> etree._Element:
    """An element in the document's default (ODM) namespace; see the module's docstring."""
    if attrib and _NOT_XML.search(" ".join(attrib.values())) is not None:
        attrib = {k: xml_text(v) for k, v in attrib.items()}  # rare: one search for all
    node = etree.Element(tag, attrib or {})
    if text is not None:
        node.text = xml_text(text)
    node.extend(children)
    return node


XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _translated(tag: str, text: str) -> etree._Element:
    return element(tag, children=[element("TranslatedText", {XML_LANG: "en"}, text)])


@contextmanager
def odm_document(out: IO[bytes], *, file_type: str, file_oid: str, created_at: datetime,
                 as_of: datetime | None, description: str) -> Iterator[Writer]:
    """Open an ODM document on ``out``; yield the writer positioned inside the root."""
    attrib = {"FileType": file_type, "FileOID": file_oid, "Description": description,
              "CreationDateTime": utc_text(created_at), "ODMVersion": ODM_VERSION,
              "Granularity": "All", "Originator": "TrialLedger", "SourceSystem": "TrialLedger",
              "SourceSystemVersion": _source_version()}
    if file_type == "Transactional":
        attrib["Archival"] = "Yes"
    if as_of is not None:
        attrib["AsOfDateTime"] = utc_text(as_of)
    with etree.xmlfile(out, encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element(f"{{{NS}}}ODM", attrib, nsmap={None: NS}):
            xf.write("\n")
            yield xf


def study(definition: StudyDefinition, cat: Catalogue) -> etree._Element:
    """The Study element: global variables, units, and the MetaDataVersion of every form."""
    units = element("BasicDefinitions", children=[
        element("MeasurementUnit", {"OID": oid, "Name": symbol},
                children=[_translated("Symbol", symbol)]) for oid, symbol in cat.units.items()])
    return element("Study", {"OID": definition.study_id}, children=[
        element("GlobalVariables", children=[
            element("StudyName", text=definition.study_id),
            element("StudyDescription", text=definition.title),
            element("ProtocolName", text=definition.study_id)]),
        units,
        _metadata_version(definition, cat)])


def _metadata_version(definition: StudyDefinition, cat: Catalogue) -> etree._Element:
    record_forms = [form for key, form in cat.forms.items() if key != SUBJECT]
    protocol = element("Protocol", children=[
        element("StudyEventRef", {"StudyEventOID": event.oid, "OrderNumber": str(n),
                                  "Mandatory": "Yes" if event.oid == COMMON_EVENT else "No"})
        for n, event in enumerate(cat.events, 1)])
    event_defs = []
    for event in cat.events:
        forms = [cat.forms[SUBJECT], *record_forms] if event.oid == COMMON_EVENT \
            else record_forms
        event_defs.append(element(
            "StudyEventDef", {"OID": event.oid, "Name": event.name, "Repeating": "No",
                              "Type": event.event_type},
            children=[element("FormRef", {"FormOID": form.oid, "OrderNumber": str(n),
                                          "Mandatory": "Yes" if form.key == SUBJECT else "No"})
                      for n, form in enumerate(forms, 1)]))
    form_defs = [element("FormDef", {"OID": f.oid, "Name": f.name, "Repeating": "No"},
                         children=[element("ItemGroupRef", {
                             "ItemGroupOID": f.group_oid,
                             "Mandatory": "Yes" if f.key == SUBJECT else "No"})])
                 for f in cat.forms.values()]
    group_defs = [element(
        "ItemGroupDef", {"OID": f.group_oid, "Name": f.name,
                         "Repeating": "Yes" if f.repeating else "No", "Domain": f.domain,
                         "SASDatasetName": f.domain},
        children=[element("ItemRef", {"ItemOID": item.oid, "OrderNumber": str(n),
                                      "Mandatory": "No"})
                  for n, item in enumerate(f.items, 1)]) for f in cat.forms.values()]
    codelists = {c.oid for c in cat.codelists}
    item_defs = [_item_def(item, codelists) for f in cat.forms.values() for item in f.items]
    return element(
        "MetaDataVersion", {"OID": MDV_OID, "Name": f"{definition.study_id} as registered",
                            "Description": definition.title},
        children=[protocol, *event_defs, *form_defs, *group_defs, *item_defs,
                  *(_codelist(c) for c in cat.codelists)])


def _item_def(item: Item, codelists: Container[str]) -> etree._Element:
    attrib = {"OID": item.oid, "Name": item.name, "DataType": item.data_type}
    if item.sdtm:
        attrib["SDSVarName"] = item.sdtm
    if item.method:
        attrib["Origin"] = "Derived"
        attrib["Comment"] = f"Derived by {item.method}"
    children = [_translated("Question", item.question or item.name)]
    if item.unit:
        children.append(element("MeasurementUnitRef", {"MeasurementUnitOID": item.unit}))
    if item.codelist is not None and item.codelist in codelists:
        children.append(element("CodeListRef", {"CodeListOID": item.codelist}))
    return element("ItemDef", attrib, children=children)


def _codelist(codelist: CodeList) -> etree._Element:
    return element("CodeList", {"OID": codelist.oid, "Name": codelist.name,
                                "DataType": codelist.data_type}, children=[
        element("CodeListItem", {"CodedValue": code}, children=[_translated("Decode", decode)])
        for code, decode in codelist.items])


@dataclass(frozen=True)
class User:
    """A person who acted on the study's data, as the envelopes name them."""

    user_id: str
    printed_name: str
    role: str
    sites: tuple[str, ...]


# ODM knows four kinds of user; site staff enter and sign, the sponsor's people review.
USER_TYPES = {"investigator": "Investigator", "coordinator": "Investigator",
              "monitor": "Sponsor", "data_manager": "Sponsor"}


def admin_data(definition: StudyDefinition, users: Iterable[User],
               sites: Iterable[str]) -> etree._Element:
    """AdminData: the users, the locations (the study's sites plus any other site an actor
    acted from), and a SignatureDef per signature meaning of the study.

    The SignatureDefs are where e-signatures will point: a ``Signature`` element (UserRef,
    LocationRef, SignatureRef to ``SD.<meaning>``, DateTimeStamp) goes on the SubjectData a
    signature covers, once the domain records signatures.
    """
    locations = []
    for code in sorted(set(definition.sites) | set(sites)):
        name = str(definition.sites.get(code, {}).get("name", code))
        locations.append(element(
            "Location", {"OID": code, "Name": name,
                         "LocationType": "Site" if code in definition.sites else "Other"},
            children=[element("MetaDataVersionRef", {
                "StudyOID": definition.study_id, "MetaDataVersionOID": MDV_OID,
                "EffectiveDate": definition.start_date.isoformat()})]))
    user_elements = [element(
        "User", {"OID": u.user_id, "UserType": USER_TYPES.get(u.role, "Other")},
        children=[element("FullName", text=u.printed_name),
                  *(element("LocationRef", {"LocationOID": s}) for s in u.sites)])
        for u in users]
    signature_defs = [element(
        "SignatureDef", {"OID": signature_oid(code), "Methodology": "Electronic"},
        children=[element("Meaning", text=meaning), element("LegalReason", text=LEGAL_REASON)])
        for code, meaning in definition.signature_meanings.items()]
    return element("AdminData", {"StudyOID": definition.study_id},
                   children=[*user_elements, *locations, *signature_defs])


def signature_oid(meaning: str) -> str:
    """SignatureDef OID of a signature meaning of the study."""
    return f"SD.{meaning}"


def write_block(xf: Writer, node: etree._Element) -> None:
    """Write one finished subtree, one per line (readable, and diff-friendly)."""
    xf.write(node)
    xf.write("\n")


class Nesting:
    """The open containers (SubjectData > StudyEventData > FormData) of a streamed document.

    Rows arrive sorted by subject, event and form; ``enter`` keeps a level open while its key
    stays the same and otherwise closes it (and everything inside it) and opens the next.
    """

    def __init__(self, xf: Writer) -> None:
        self.xf = xf
        self._open: list[tuple[str, ExitStack]] = []

    def enter(self, level: int, key: str, tag: str, attrib: dict[str, str]) -> None:
        """Make sure ``tag`` with ``key`` is the open container at ``level``."""
        if len(self._open) > level and self._open[level][0] == key:
            return
        self.close(level)
        stack = ExitStack()
        stack.enter_context(self.xf.element(tag, attrib))
        self._open.append((key, stack))

    def close(self, level: int = 0) -> None:
        """Close every container at ``level`` and deeper."""
        while len(self._open) > level:
            self._open.pop()[1].close()
            self.xf.write("\n")
