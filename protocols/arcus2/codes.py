"""Arcus response codes: the three-character ``response_code``, its texts, and the rc_res.ini format.

Arcus's ``response_code`` is three characters wide; the acquirer's codes are not (host-rules.md:
"-2011", "151019", "5"). The terminal therefore sends both: ``response_code`` by the table below and
``host_code``, the acquirer's own code, which the slip and the journal keep.

======================  ==============================================================
``response_code``       when
======================  ==============================================================
``000``                 approved (status APPROVED or APPROVED_OFFLINE), whatever the host code
``998``                 *posbridge*: aborted by the cashier (``A``) or the card holder
``999``                 *posbridge, ECR side only*: the terminal did not answer (never on the wire)
``990``                 no connection to the host (status NO_CONNECTION)
three digits            the host's own three-digit code, passed through ("116", "913", ...)
one or two digits       zero-padded: "5" -> ``005``
the table below         :data:`HOST_CODE_MAP`: host codes that do not fit three characters
``900``                 any other decline (the host code is in ``host_code``)
======================  ==============================================================

The ECR reads the status back from the code (:func:`status_for`): 000 approved, 998 aborted, 990 no
connection, 956 reversed (for operations that move money), 999 undefined, anything else declined.
"""

from __future__ import annotations

import re

from ..common.model import Operation, Status

from .ops import IniFileError, decode_config

__all__ = [
    "APPROVED",
    "ABORTED",
    "NO_ANSWER",
    "NO_CONNECTION",
    "AUTO_REVERSED",
    "OTHER_DECLINE",
    "HOST_CODE_MAP",
    "DEFAULT_TEXTS",
    "DEFAULT_RC_RES_INI",
    "response_code_for",
    "status_for",
    "parse_rc_res",
]

APPROVED = "000"
ABORTED = "998"  # posbridge's own: the operation was aborted (A from the ECR, card holder's cancel)
NO_ANSWER = "999"  # posbridge's own, ECR side: the terminal did not answer
NO_CONNECTION = "990"
AUTO_REVERSED = "956"  # host 151019: sent, no answer; the terminal reversed on its own
OTHER_DECLINE = "900"

#: Host codes (host-rules.md) that do not fit three characters -> ``response_code``.
HOST_CODE_MAP: dict[str, str] = {
    "-2011": "951",  # 3-D Secure: PaRes status U
    "-2016": "952",  # 3-D Secure: VeRes status U
    "-20010": "953",  # BLOCKED_BY_LIMIT
    "151017": "954",  # TDSEC_COMM_ERROR
    "151018": "955",  # processing timeout, could not send
    "151019": AUTO_REVERSED,  # processing timeout, sent but no answer: reversed automatically
    "71015": "957",  # card details entered incorrectly
    "1004": "958",  # authorization phase 1
    "1005": "959",  # authorization phase 2
    "9001": "960",  # internal error
    "9010": "970",  # posbridge host: cancel of an operation not in the open batch
    "9011": "971",  # posbridge host: no operation with that RRN
    "9012": "972",  # posbridge host: RRN missing
    "9013": "973",  # posbridge host: the hold expired
    "9014": "974",  # posbridge host: the original cannot be acted on
    "9015": "975",  # posbridge host: the original is of the wrong kind
}
_RESERVED = frozenset({APPROVED, ABORTED, NO_ANSWER, NO_CONNECTION})

#: What posbridge says for each response code (rc_res.ini's role); an rc_res.ini file overrides.
DEFAULT_TEXTS: dict[str, str] = {
    "000": "ОДОБРЕНО",
    "005": "ОТКЛОНЕНО: СЕТЬ ОТКАЗАЛА В ОПЕРАЦИИ",
    "101": "ОТКЛОНЕНО: СРОК ДЕЙСТВИЯ КАРТЫ ИСТЕК",
    "110": "ОТКЛОНЕНО: НЕВЕРНАЯ СУММА",
    "111": "ОТКЛОНЕНО: НЕВЕРНЫЙ НОМЕР КАРТЫ",
    "116": "ОТКЛОНЕНО: НЕДОСТАТОЧНО СРЕДСТВ",
    "123": "ОТКЛОНЕНО: ПРЕВЫШЕН ЛИМИТ",
    "209": "ОТКЛОНЕНО: ПРЕВЫШЕНЫ ОГРАНИЧЕНИЯ ПО КАРТЕ",
    "400": "ОТМЕНА ПРОВЕДЕНА",
    "900": "ОТКЛОНЕНО",
    "902": "ОТКЛОНЕНО: ПРЕВЫШЕНЫ ОГРАНИЧЕНИЯ ПО КАРТЕ",
    "903": "ОТКЛОНЕНО: СУММА ПРЕВЫШАЕТ ЛИМИТ ЭМИТЕНТА",
    "913": "ОТКЛОНЕНО: НЕВЕРНЫЙ ФОРМАТ СООБЩЕНИЯ",
    "951": "ОТКЛОНЕНО: 3-D SECURE, СТАТУС PARES U",
    "952": "ОТКЛОНЕНО: 3-D SECURE, СТАТУС VERES U",
    "953": "ОТКЛОНЕНО: ЗАБЛОКИРОВАНО ПО ЛИМИТУ",
    "954": "ОТКЛОНЕНО: ОШИБКА СВЯЗИ 3-D SECURE",
    "955": "ОТКЛОНЕНО: ТАЙМАУТ, ЗАПРОС НЕ ОТПРАВЛЕН",
    "956": "ОПЕРАЦИЯ АВТОМАТИЧЕСКИ ОТМЕНЕНА: НЕТ ОТВЕТА БАНКА",
    "957": "ОТКЛОНЕНО: НЕВЕРНО ВВЕДЕНЫ ДАННЫЕ КАРТЫ",
    "958": "АВТОРИЗАЦИЯ: ФАЗА 1",
    "959": "АВТОРИЗАЦИЯ: ФАЗА 2",
    "960": "ОТКЛОНЕНО: ВНУТРЕННЯЯ ОШИБКА",
    "970": "ОТКЛОНЕНО: ОПЕРАЦИЯ НЕ В ОТКРЫТОМ ПАКЕТЕ, ИСПОЛЬЗУЙТЕ ВОЗВРАТ",
    "971": "ОТКЛОНЕНО: ИСХОДНАЯ ОПЕРАЦИЯ НЕ НАЙДЕНА",
    "972": "ОТКЛОНЕНО: НУЖЕН RRN ИСХОДНОЙ ОПЕРАЦИИ",
    "973": "ОТКЛОНЕНО: СРОК АВТОРИЗАЦИИ ИСТЕК",
    "974": "ОТКЛОНЕНО: ИСХОДНАЯ ОПЕРАЦИЯ НЕДОСТУПНА",
    "975": "ОТКЛОНЕНО: НЕВЕРНЫЙ ТИП ИСХОДНОЙ ОПЕРАЦИИ",
    "990": "НЕТ СВЯЗИ С БАНКОМ",
    "998": "ОПЕРАЦИЯ ПРЕРВАНА",
    "999": "НЕТ ОТВЕТА ОТ ТЕРМИНАЛА",
}

#: :data:`DEFAULT_TEXTS` in rc_res.ini format (``protocols/arcus2/rc_res.ini`` is this text).
DEFAULT_RC_RES_INI = (
    "# posbridge response texts (rc_res.ini format): CODE=TEXT, a line per code\n"
    + "".join(f"{code}={text}\n" for code, text in DEFAULT_TEXTS.items())
)


def response_code_for(status: Status, host_code: str | None) -> str:
    """The three-character ``response_code`` a terminal sends for ``status`` and the host's code."""
    if status in (Status.APPROVED, Status.APPROVED_OFFLINE):
        return APPROVED
    if status is Status.ABORTED:
        return ABORTED
    if status is Status.NO_CONNECTION:
        return NO_CONNECTION
    code = (host_code or "").strip()
    if code in HOST_CODE_MAP:
        return HOST_CODE_MAP[code]
    if code.isascii() and code.isdigit() and len(code) <= 3:
        padded = code.zfill(3)
        if padded not in _RESERVED:  # a decline must never read as approved, aborted or no answer
            return padded
    return OTHER_DECLINE


def status_for(response_code: str, operation: Operation) -> Status:
    """The outcome the ECR reads from a ``response_code`` of ``operation`` (see the module table)."""
    if response_code == APPROVED:
        return Status.APPROVED
    if response_code == ABORTED:
        return Status.ABORTED
    if response_code == NO_CONNECTION:
        return Status.NO_CONNECTION
    if response_code == AUTO_REVERSED and operation.moves_money:
        return Status.REVERSED
    if response_code == NO_ANSWER:
        return Status.UNDEFINED
    return Status.DECLINED


_RC_LINE = re.compile(r"(?P<code>-?\d{1,6})\s*(?:[=,;:\t]|\s)\s*(?P<text>.*)")


def parse_rc_res(text: str | bytes, source: str = "rc_res.ini") -> dict[str, str]:
    """Parse an rc_res.ini-format file's text or bytes (UTF-8 or CP1251): a line per code,
    ``CODE<separator>TEXT``.

    The separator is ``=``, ``,``, ``;``, ``:``, a tab or spaces. ``#`` / ``;`` comment lines,
    ``[section]`` lines and blank lines are skipped; a later line for the same code wins.
    Raises :class:`~posbridge.protocols.arcus2.ops.IniFileError` naming the line of a malformed one.
    """
    texts: dict[str, str] = {}
    for number, raw in enumerate(decode_config(text).splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;" or (line[0] == "[" and line.endswith("]")):
            continue
        match = _RC_LINE.fullmatch(line)
        if match is None:
            raise IniFileError(source, number, f"expected 'CODE=TEXT', got {line[:60]!r}")
        texts[match.group("code")] = match.group("text").strip()
    return texts
