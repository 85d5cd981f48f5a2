"""Realistic strings for synthetic pages: names, addresses, dates, amounts, letter and invoice text.

One :class:`TextSource` serves one page in one locale (en_US, en_GB or fr_FR); it draws from
Faker seeded by the page's generator and from small phrase banks, so a page's text is a pure
function of its seed.
"""

from __future__ import annotations

import datetime
from functools import cache

import numpy as np
from faker import Faker

LOCALES: tuple[str, ...] = ("en_US", "en_GB", "fr_FR")
# Fixed bounds: Faker's relative dates ("-30y") would change the pages with the day they are made.
_FIRST_DATE, _LAST_DATE = datetime.date(1970, 1, 1), datetime.date(2030, 12, 31)

_MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"],
}

_LETTER = {
    "en": [
        "Thank you for your letter of {date} regarding your account.",
        "Please find enclosed the documents you requested.",
        "We confirm receipt of your payment of {amount}.",
        "Our records show an outstanding balance of {amount} on invoice {ref}.",
        "I am writing to inform you that your application has been approved.",
        "Your appointment has been scheduled for {date}.",
        "Should you have any questions, please do not hesitate to contact us.",
        "We would be grateful if you could return the signed form by {date}.",
        "The goods were delivered to {city} on {date}.",
        "I would like to apologise for the delay in answering your request.",
        "Please quote reference {ref} in all future correspondence.",
        "Our office will be closed from {date} until further notice.",
        "I look forward to hearing from you.",
        "We regret to inform you that the item you ordered is no longer available.",
        "A refund of {amount} will be credited to your account within ten days.",
    ],
    "fr": [
        "Nous accusons réception de votre courrier du {date} concernant votre dossier.",
        "Veuillez trouver ci-joint les documents que vous nous avez demandés.",
        "Nous vous confirmons la réception de votre règlement de {amount}.",
        "Sauf erreur de notre part, la facture {ref} reste impayée à ce jour.",
        "J'ai le plaisir de vous informer que votre demande a été acceptée.",
        "Votre rendez-vous est fixé au {date} à notre agence de {city}.",
        "Nous restons à votre disposition pour tout renseignement complémentaire.",
        "Merci de nous retourner le formulaire signé avant le {date}.",
        "La marchandise a été livrée à {city} le {date}.",
        "Je vous prie de bien vouloir excuser le retard de ma réponse.",
        "Merci de rappeler la référence {ref} dans toute correspondance.",
        "Le montant de {amount} sera remboursé sur votre compte sous dix jours.",
        "Nous regrettons de ne pouvoir donner une suite favorable à votre demande.",
        "Je me permets de vous relancer au sujet de notre échange du {date}.",
        "Vous trouverez ci-dessous le détail des prestations réalisées.",
    ],
}

_SALUTATION = {"en": ["Dear {name},", "Dear Sir or Madam,", "Dear {title} {last},", "Hello {first},"],
               "fr": ["Madame, Monsieur,", "Chère Madame,", "Cher Monsieur,", "Bonjour {first},",
                      "Cher {first},"]}
_CLOSING = {"en": ["Yours sincerely,", "Yours faithfully,", "Kind regards,", "Best wishes,", "Sincerely,"],
            "fr": ["Cordialement,", "Bien cordialement,", "Sincères salutations,",
                   "Veuillez agréer, Madame, Monsieur, mes salutations distinguées.", "Bien à vous,"]}
_SUBJECT = {"en": ["Re: {topic} {ref}", "Subject: {topic}", "Your reference: {ref}"],
            "fr": ["Objet : {topic} {ref}", "Objet : {topic}", "Réf. : {ref}"]}
_WHAT = {"en": ["the invoice", "the order", "the application", "the contract", "the claim", "the account",
                "the payment reminder", "the change of address", "the delivery"],
         "fr": ["la facture", "la commande", "la demande", "le contrat", "le sinistre", "le compte", "la relance",
                "le changement d'adresse", "la livraison"]}
_ITEMS = {"en": ["Consulting services", "Office chairs", "Printer paper A4", "Software licence", "Maintenance",
                 "Delivery charges", "Installation", "Training session", "Spare parts", "Cleaning service",
                 "Monthly subscription", "Hardware support", "Design work", "Travel expenses", "Ink cartridges"],
          "fr": ["Prestation de conseil", "Chaises de bureau", "Ramette papier A4", "Licence logicielle",
                 "Maintenance annuelle", "Frais de livraison", "Installation", "Formation", "Pièces détachées",
                 "Nettoyage des locaux", "Abonnement mensuel", "Assistance matérielle", "Création graphique",
                 "Frais de déplacement", "Cartouches d'encre"]}
_NOTES = {"en": ["call {first} about {what}", "buy {n} boxes of paper", "meeting with {name} at {time}",
                 "send {what} to {city}", "pay {amount} before {date}", "check {what} {ref}",
                 "pick up keys", "book train to {city}", "reply to {first}", "order {n} chairs"],
          "fr": ["appeler {first} pour {what}", "acheter {n} ramettes", "réunion avec {name} à {time}",
                 "envoyer {what} à {city}", "payer {amount} avant le {date}", "vérifier {what} {ref}",
                 "récupérer les clés", "réserver le train pour {city}", "répondre à {first}",
                 "commander {n} chaises"]}
_WORDS = {"en": {"invoice": "INVOICE", "number": "Invoice no.", "date": "Date", "customer": "Customer no.",
                 "bill_to": "Bill to", "description": "Description", "qty": "Qty", "unit": "Unit price",
                 "amount": "Amount", "subtotal": "Subtotal", "vat": "VAT", "total": "Total", "page": "Page",
                 "due": "Payment due within 30 days.", "bank": "Bank details", "report": "Report"},
          "fr": {"invoice": "FACTURE", "number": "Facture n°", "date": "Date", "customer": "Client n°",
                 "bill_to": "Facturé à", "description": "Désignation", "qty": "Qté", "unit": "Prix unitaire",
                 "amount": "Montant", "subtotal": "Total HT", "vat": "TVA", "total": "Total TTC", "page": "Page",
                 "due": "Paiement à 30 jours.", "bank": "Coordonnées bancaires", "report": "Rapport"}}

_FORM_TITLES = {"en": ["Application form", "Change of address", "Registration form", "Expense claim",
                       "Membership application", "Insurance claim form", "Patient information",
                       "Order form", "Direct debit mandate", "Employee details"],
                "fr": ["Formulaire de demande", "Déclaration de changement d'adresse", "Fiche d'inscription",
                       "Note de frais", "Demande d'adhésion", "Déclaration de sinistre", "Fiche patient",
                       "Bon de commande", "Mandat de prélèvement", "Fiche de renseignements"]}
_SECTIONS = {"en": ["Personal details", "Contact details", "Address", "Employment", "Payment", "Declaration",
                    "Applicant", "Details of the claim", "Emergency contact"],
             "fr": ["État civil", "Coordonnées", "Adresse", "Situation professionnelle", "Règlement",
                    "Déclaration", "Demandeur", "Description du sinistre", "Personne à prévenir"]}
_INSTRUCTIONS = {"en": ["Please write in capital letters using black or blue ink.",
                        "Complete all sections and return this form to the address above.",
                        "Fields marked with * are mandatory."],
                 "fr": ["Merci d'écrire en lettres majuscules, à l'encre noire ou bleue.",
                        "Remplir toutes les rubriques et retourner ce formulaire à l'adresse ci-dessus.",
                        "Les champs marqués d'un * sont obligatoires."]}
_CHOICES = {"en": [("Title", ["Mr", "Mrs", "Ms", "Dr"]), ("Marital status", ["Single", "Married", "Divorced",
                                                                             "Widowed"]),
                   ("Payment method", ["Cash", "Cheque", "Card", "Transfer"]), ("Do you agree?", ["Yes", "No"]),
                   ("Contact by", ["Phone", "E-mail", "Post"])],
            "fr": [("Civilité", ["M.", "Mme"]), ("Situation familiale", ["Célibataire", "Marié(e)", "Pacsé(e)",
                                                                        "Veuf/Veuve"]),
                   ("Mode de règlement", ["Espèces", "Chèque", "Carte", "Virement"]),
                   ("Acceptez-vous ?", ["Oui", "Non"]), ("Être contacté par", ["Téléphone", "Courriel",
                                                                              "Courrier"])]}


@cache
def _faker(locale: str) -> Faker:
    # Building a Faker costs tens of milliseconds: one per locale per process, reseeded per page.
    return Faker(locale)


class TextSource:
    """Strings for one page in one locale, all drawn from ``rng``."""

    def __init__(self, locale: str, rng: np.random.Generator) -> None:
        if locale not in LOCALES:
            raise ValueError(f"unknown locale {locale!r}; choose one of {', '.join(LOCALES)}")
        self.locale = locale
        self.lang = locale[:2]
        self.rng = rng
        self.fake = _faker(locale)
        self.fake.seed_instance(int(rng.integers(2**31)))
        # en_GB's lorem words are Latin; English words come from en_US.
        self.words = _faker("fr_FR" if self.lang == "fr" else "en_US")
        if self.words is not self.fake:
            self.words.seed_instance(int(rng.integers(2**31)))

    def pick(self, options: list[str]) -> str:
        """One of ``options``."""
        return options[int(self.rng.integers(len(options)))]

    def word(self, key: str) -> str:
        """A fixed document word (invoice headings ...) in the page's language."""
        return _WORDS[self.lang][key]

    def name(self) -> str:
        """A person's full name."""
        return self.fake.name()

    def first_name(self) -> str:
        """A first name."""
        return self.fake.first_name()

    def last_name(self) -> str:
        """A family name."""
        return self.fake.last_name()

    def company(self) -> str:
        """A company name."""
        return self.fake.company()

    def city(self) -> str:
        """A city name."""
        return self.fake.city()

    def postcode(self) -> str:
        """A postal code."""
        return self.fake.postcode()

    def street(self) -> str:
        """A street address (one line)."""
        return self.fake.street_address()

    def address(self) -> list[str]:
        """A postal address, one string per line."""
        return [s.strip() for s in self.fake.address().split("\n") if s.strip()]

    def phone(self) -> str:
        """A phone number."""
        return self.fake.phone_number()

    def email(self) -> str:
        """An e-mail address."""
        return self.fake.email()

    def iban(self) -> str:
        """An IBAN, grouped by four as printed on documents."""
        raw = self.fake.iban()
        return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))

    def job(self) -> str:
        """A job title."""
        return self.fake.job()

    def ref(self) -> str:
        """A document reference such as 'INV-2023-0412'."""
        prefix = self.pick(["INV", "REF", "CMD", "N°", "DOS", "AC"] if self.lang == "fr" else
                           ["INV", "REF", "PO", "No.", "ACC", "CL"])
        sep = self.pick(["-", "/", " ", ""])
        return f"{prefix}{sep}{int(self.rng.integers(1990, 2031))}{sep}{int(self.rng.integers(1, 99999)):05d}"

    def date(self) -> str:
        """A date written the way this locale writes dates."""
        d = self.fake.date_between_dates(_FIRST_DATE, _LAST_DATE)
        style = int(self.rng.integers(3))
        month = _MONTHS[self.lang][d.month - 1]
        if self.locale == "en_US":
            return [f"{d.month:02d}/{d.day:02d}/{d.year}", f"{month} {d.day}, {d.year}",
                    f"{d.month}/{d.day}/{d.year % 100:02d}"][style]
        if self.locale == "en_GB":
            return [f"{d.day:02d}/{d.month:02d}/{d.year}", f"{d.day} {month} {d.year}",
                    f"{d.day}.{d.month:02d}.{d.year}"][style]
        return [f"{d.day:02d}/{d.month:02d}/{d.year}", f"{d.day} {month} {d.year}",
                f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}"][style]

    def amount(self, low: float = 1.0, high: float = 5000.0, currency: bool = True) -> str:
        """A money amount with this locale's separators and currency sign."""
        return self.money(float(np.exp(self.rng.uniform(np.log(low), np.log(high)))), currency)

    def money(self, value: float, currency: bool = True) -> str:
        """``value`` written as money in this locale."""
        whole, cents = divmod(round(value * 100), 100)
        if self.lang == "fr":
            digits = f"{whole:,}".replace(",", " ")
            text = f"{digits},{cents:02d}"
            return f"{text} €" if currency else text
        text = f"{whole:,}.{cents:02d}"
        return (("$" if self.locale == "en_US" else "£") + text) if currency else text

    def quantity(self) -> str:
        """A small count."""
        return str(int(self.rng.choice([1, 1, 1, 2, 2, 3, 4, 5, 6, 10, 12, 20, 25, 50, 100])))

    def time(self) -> str:
        """A clock time."""
        h, m = int(self.rng.integers(7, 20)), int(self.rng.choice([0, 15, 30, 45]))
        return f"{h}h{m:02d}" if self.lang == "fr" else f"{h}:{m:02d}"

    def _fill(self, template: str) -> str:
        first, last = self.first_name(), self.last_name()
        what = self.pick(_WHAT[self.lang])
        return template.format(
            date=self.date(), amount=self.amount(), ref=self.ref(), city=self.city(), name=f"{first} {last}",
            first=first, last=last, title=self.pick(["Mr", "Ms", "Mrs", "Dr"]), n=self.quantity(),
            time=self.time(), what=what, topic=what.split(" ", 1)[1])

    def sentence(self) -> str:
        """A sentence of a business letter, or a plain sentence of common words."""
        if self.rng.random() < 0.55:
            return self._fill(self.pick(_LETTER[self.lang]))
        return self.words.sentence(nb_words=int(self.rng.integers(5, 16)))

    def paragraph(self, sentences: int) -> str:
        """``sentences`` sentences as one paragraph."""
        return " ".join(self.sentence() for _ in range(sentences))

    def salutation(self) -> str:
        """The opening line of a letter."""
        return self._fill(self.pick(_SALUTATION[self.lang]))

    def closing(self) -> str:
        """The closing line of a letter."""
        return self.pick(_CLOSING[self.lang])

    def subject(self) -> str:
        """A letter's subject line."""
        return self._fill(self.pick(_SUBJECT[self.lang]))

    def item(self) -> str:
        """An invoice line item."""
        return self.pick(_ITEMS[self.lang])

    def note(self) -> str:
        """A short to-do or memo line."""
        return self._fill(self.pick(_NOTES[self.lang]))

    def title(self) -> str:
        """A report or section title: a few capitalised words."""
        return self.words.sentence(nb_words=int(self.rng.integers(2, 6))).rstrip(".")

    def place_date(self) -> str:
        """'Paris, le 3 mars 2024' / 'London, 3 March 2024'."""
        return f"{self.city()}, le {self.date()}" if self.lang == "fr" else f"{self.city()}, {self.date()}"

    def form_title(self) -> str:
        """A form's title."""
        return self.pick(_FORM_TITLES[self.lang])

    def section(self, number: int) -> str:
        """A numbered form section heading."""
        return f"{number}. {self.pick(_SECTIONS[self.lang])}"

    def instruction(self) -> str:
        """A line telling how to fill in a form."""
        return self.pick(_INSTRUCTIONS[self.lang])

    def choice(self) -> tuple[str, list[str]]:
        """A multiple-choice question of a form and its options."""
        question, options = _CHOICES[self.lang][int(self.rng.integers(len(_CHOICES[self.lang])))]
        return question, list(options)

    def label(self, english: str, french: str) -> str:
        """A field label in the page's language."""
        return french if self.lang == "fr" else english

    def value(self, kind: str) -> str:
        """A value for a form field of ``kind`` (a value kind of :data:`FIELDS`)."""
        return getattr(self, kind)()


#: Form fields: (value kind, English label, French label); the value kind names a TextSource method.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("last_name", "Last name", "Nom"), ("first_name", "First name", "Prénom"), ("name", "Full name", "Nom et prénom"),
    ("date", "Date of birth", "Date de naissance"), ("city", "Place of birth", "Lieu de naissance"),
    ("street", "Address", "Adresse"), ("city", "City", "Ville"), ("postcode", "Postcode", "Code postal"),
    ("phone", "Telephone", "Téléphone"), ("email", "E-mail", "Courriel"), ("company", "Employer", "Employeur"),
    ("job", "Occupation", "Profession"), ("amount", "Amount", "Montant"), ("ref", "Reference", "Référence"),
    ("iban", "IBAN", "IBAN"), ("date", "Date", "Date"), ("quantity", "Number of persons", "Nombre de personnes"),
    ("name", "Contact person", "Personne à contacter"), ("phone", "Mobile", "Portable"),
)
