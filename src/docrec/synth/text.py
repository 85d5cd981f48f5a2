"""Realistic strings for synthetic pages: names, addresses, dates, amounts, letter and invoice text.

One :class:`TextSource` serves one page in one locale (en_US, en_GB or fr_FR); it draws from
Faker seeded by the page's generator, from a small grammar over large word lists and from random codes
and numbers (few stock phrases: the decoder must read, not recall), so a page's text is a pure
function of its seed.
"""

from __future__ import annotations

import datetime
from functools import cache

import numpy as np
from faker import Faker
from faker.providers.lorem import en_US as _en_lorem
from faker.providers.lorem import fr_FR as _fr_lorem

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


def _split(words: str) -> list[str]:
    return words.split()


# ---------------------------------------------------------------------------------------------
# Composed text. A handful of fixed sentences lets the decoder learn phrases instead of reading,
# so prose is composed from a small grammar over large word lists, mixed with shuffled common
# words and with codes, IDs and numbers that no language model can predict.
# Every character used here is drawn by every font or has a stand-in (accents, see fonts.fit_text).

#: Punctuation used in codes and IDs: every font, caps-only ones included, has these glyphs.
CODE_PUNCT = "-/.:#,()+&'%*_@="
_UPPER, _LOWER, _DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "0123456789"

_EN_NOUNS = _split("""account address agreement amount appointment balance bank bill board box budget building
car card case certificate change charge cheque claim client code committee company complaint contract copy
cost customer date deadline delivery department deposit design detail document driver employee engineer
equipment estimate event expense fee file form fund guarantee house insurance invoice issue item job key
letter licence list loan manager meeting member message month notice number office order owner package page
parcel partner payment pension period permit phone plan policy price printer problem product project proposal
purchase quote receipt record refund rent repair report request reservation schedule school service shipment
signature site statement stock student subscription supplier survey tax team tenant ticket training transfer
trip unit vehicle visit warranty week window year answer budget catalogue cheque desk door folder garden
lease machine note patient pharmacy prescription property quarter room sample season share station street
tool transaction value voucher wage warehouse website""")
_EN_ADJS = _split("""annual available complete current daily detailed early final first following full general
important initial large late local main monthly new next old online original outstanding personal previous
printed private public quarterly recent regular revised second separate short signed simple small special
standard total urgent usual valid weekly whole written additional correct missing reduced blue green red
yellow black white cheap expensive free heavy light long open closed empty broken damaged updated unpaid
confidential temporary permanent internal external official""")
_EN_VERBS = [v.split("/") for v in _split("""send/sent receive/received check/checked confirm/confirmed review/reviewed
sign/signed return/returned cancel/cancelled update/updated approve/approved pay/paid order/ordered
deliver/delivered replace/replaced repair/repaired book/booked attach/attached prepare/prepared
discuss/discussed forward/forwarded print/printed file/filed renew/renewed collect/collected arrange/arranged
submit/submitted process/processed issue/issued transfer/transferred accept/accepted reject/rejected
complete/completed change/changed write/written bring/brought find/found keep/kept give/given take/taken
make/made move/moved open/opened close/closed copy/copied scan/scanned post/posted store/stored sell/sold
buy/bought lend/lent check/checked clean/cleaned test/tested measure/measured count/counted read/read
prepare/prepared extend/extended reduce/reduced increase/increased correct/corrected archive/archived
invoice/invoiced refund/refunded register/registered""")]
_EN_SUBJECTS = [("We", True), ("I", True), ("They", True), ("Our team", False), ("The manager", False),
                ("The supplier", False), ("Your bank", False), ("The committee", False), ("The customer", False),
                ("Our accountant", False), ("The tenant", False), ("The driver", False), ("My colleague", False),
                ("The landlord", False), ("Head office", False), ("The engineer", False), ("You", True)]
_EN_MODALS = ["will", "can", "should", "must", "may", "could", "would", "might", "cannot", "will not",
              "would like to", "shall", "will soon", "should not"]
_EN_DETS = ["the", "the", "your", "our", "this", "that", "a", "each", "every", "the same", "another", "their"]
_EN_PLACES = ["by {date}", "before {date}", "on {date}", "in {city}", "to {city}", "from {city}", "for {amount}",
              "worth {amount}", "under reference {ref}", "at {time}", "with {name}", "for {company}",
              "after the {noun}", "without the {noun}", "as part of the {noun}", "next week", "this morning",
              "as soon as possible", "by post", "by e-mail", "in two copies", "within {n} days", "at {street}",
              "before the end of the month", "with the {adj} {noun}", "on page {n}", "to {email}"]
_EN_OPENERS = ["However,", "In addition,", "As agreed,", "Unfortunately,", "As a result,", "Meanwhile,",
               "Following our call,", "For your information,", "If possible,", "In any case,", "Once again,",
               "Please note that", "As discussed,", "Last week,", "Tomorrow morning,", "In the meantime,",
               "At present,", "On {date},", "Since {date},", "In {city},", "Finally,", "Of course,"]
_EN_ADVERBS = ["already", "still", "probably", "again", "soon", "finally", "also", "now", "quickly", "carefully",
               "personally", "normally", "immediately", "never", "usually"]

# French nouns with their gender; adjectives as (masculine, feminine), placed after the noun.
_FR_NOUNS_M = _split("""compte contrat dossier paiement rendez-vous document courrier colis devis bon chèque client
fournisseur service bureau projet rapport formulaire montant loyer véhicule logement certificat reçu relevé
avenant bilan budget calendrier délai dépôt échéancier emploi entretien envoi équipement stage tarif titre
virement remboursement abonnement accord achat avis badge billet carnet catalogue code conseil contrôle
crédit directeur fichier inventaire justificatif matériel message numéro ordinateur paquet planning prix
produit programme registre règlement retard salaire secteur séjour site stock téléphone transport travail
voyage bail carton classeur guichet magasin dossier médecin patient locataire propriétaire chantier""")
_FR_NOUNS_F = _split("""adresse annonce assurance attestation banque caution carte commande convention copie date
déclaration demande direction échéance entreprise équipe facture formation garantie indemnité intervention
lettre licence liste livraison location machine mission note offre pièce police procédure proposition
quittance réclamation réunion réservation résiliation signature situation somme société subvention visite
voiture semaine agence annulation clé cotisation durée étude feuille imprimante installation maintenance
mutuelle prestation réparation réponse taxe ordonnance pharmacie boîte fenêtre porte salle commune région
caisse remise enveloppe""")
_FR_ADJS = [a.split("/") for a in _split("""signé/signée complet/complète annuel/annuelle mensuel/mensuelle
original/originale définitif/définitive provisoire/provisoire urgent/urgente impayé/impayée modifié/modifiée
joint/jointe principal/principale suivant/suivante précédent/précédente actuel/actuelle détaillé/détaillée
corrigé/corrigée rempli/remplie daté/datée manquant/manquante personnel/personnelle général/générale
technique/technique bancaire/bancaire administratif/administrative réduit/réduite ancien/ancienne
prévu/prévue valide/valide gratuit/gratuite local/locale public/publique privé/privée vert/verte bleu/bleue
rapide/rapide important/importante dernier/dernière nouveau/nouvelle ouvert/ouverte fermé/fermée
vide/vide cassé/cassée abîmé/abîmée lourd/lourde léger/légère confidentiel/confidentielle
temporaire/temporaire interne/interne externe/externe officiel/officielle trimestriel/trimestrielle""")]
_FR_VERBS = [v.split("/") for v in _split("""envoyer/envoyé recevoir/reçu vérifier/vérifié confirmer/confirmé
examiner/examiné signer/signé retourner/retourné annuler/annulé approuver/approuvé payer/payé régler/réglé
commander/commandé livrer/livré remplacer/remplacé réparer/réparé réserver/réservé joindre/joint
préparer/préparé transmettre/transmis imprimer/imprimé classer/classé renouveler/renouvelé
récupérer/récupéré organiser/organisé traiter/traité valider/validé accepter/accepté refuser/refusé
compléter/complété modifier/modifié rédiger/rédigé contrôler/contrôlé étudier/étudié prolonger/prolongé
déposer/déposé relancer/relancé facturer/facturé rembourser/remboursé consulter/consulté archiver/archivé
scanner/scanné calculer/calculé expédier/expédié fournir/fourni remplir/rempli prendre/pris faire/fait
ouvrir/ouvert obtenir/obtenu corriger/corrigé vendre/vendu acheter/acheté nettoyer/nettoyé
mesurer/mesuré compter/compté lire/lu noter/noté enregistrer/enregistré""")]
# (subject, aller, devoir, pouvoir, avoir)
_FR_SUBJECTS = [("Nous", "allons", "devons", "pouvons", "avons"), ("Je", "vais", "dois", "peux", "ai"),
                ("Vous", "allez", "devez", "pouvez", "avez"), ("Ils", "vont", "doivent", "peuvent", "ont")] + [
    (s, "va", "doit", "peut", "a") for s in ("Le service", "L'équipe", "Notre agence", "Le fournisseur",
                                              "Mon collègue", "La direction", "Le client", "Votre conseiller",
                                              "Le comptable", "Le locataire", "Le chauffeur", "On", "{first}")]
_FR_PLACES = ["avant le {date}", "le {date}", "à {city}", "depuis {city}", "pour {amount}",
              "d'un montant de {amount}", "sous la référence {ref}", "à {time}", "avec {name}", "pour {company}",
              "dans les meilleurs délais", "par courrier", "par courriel", "dès que possible", "cette semaine",
              "en deux exemplaires", "sous {n} jours", "au {street}", "avant la fin du mois", "à la page {n}",
              "à l'adresse {email}", "après {det_noun}", "sans {det_noun}", "avec {det_noun}"]
_FR_OPENERS = ["Par ailleurs,", "En outre,", "Comme convenu,", "Malheureusement,", "Suite à notre appel,",
               "Pour information,", "Si possible,", "En tout état de cause,", "De plus,", "Cependant,",
               "Entre-temps,", "À ce jour,", "Hier,", "Demain matin,", "Enfin,", "Toutefois,", "Par conséquent,",
               "Le {date},", "Depuis le {date},", "À {city},", "Bien entendu,", "Ensuite,"]
_FR_ADVERBS = ["déjà", "encore", "bientôt", "enfin", "aussi", "rapidement", "personnellement",
               "immédiatement", "toujours", "probablement", "vite", "également"]
_FR_VOWELS = "aàâeéèêiîoôuûhy"

#: Units and specifications printed after invoice items.
_ITEM_SPECS = ["A4", "A3", "{n} x {m} cm", "({n} pcs)", "réf. {code}", "ref. {code}", "{n} kg", "{n} g", "{n} ml",
               "{n} m", "model {code}", "modèle {code}", "{month} {year}", "n° {code}", "{n}/{m}", "lot {code}",
               "- {code}", "x{n}", "{n} h", "{n} %", "v{n}.{m}", "#{code}", "({code})", "{n}L", "Q{q} {year}"]
_EN_ITEM_NOUNS = _split("""chairs desk paper cable toner cartridge licence maintenance delivery installation training
parts cleaning subscription support design travel labour hours consulting audit hosting domain screws
batteries envelopes folders labels stamps boxes tape lamp monitor keyboard mouse charger adapter
insurance rental storage translation printing postage catering coffee water fuel parking repairs inspection
survey report paint tiles doors windows plumbing wiring software hardware server backup""")
_FR_ITEM_NOUNS = _split("""chaises bureau papier câble toner cartouche licence maintenance livraison installation
formation pièces nettoyage abonnement assistance création déplacement main-d'oeuvre heures conseil audit
hébergement domaine vis piles enveloppes classeurs étiquettes timbres cartons ruban lampe écran clavier
souris chargeur adaptateur assurance location stockage traduction impression affranchissement traiteur
café eau carburant stationnement réparations contrôle étude rapport peinture carrelage portes fenêtres
plomberie électricité logiciel matériel serveur sauvegarde""")
_EN_SUBJECT_NAMES = frozenset([s for s, _ in _EN_SUBJECTS] + ["Please", "Could you", "Remember to",
                                                                 "Do not forget to", "Kindly"])
_IRREGULAR_PAST = {"write": "wrote", "give": "gave", "take": "took"}
#: Large lists of common words (Faker's lorem lists are real English and French words) with ours.
_EN_WORDS = tuple(dict.fromkeys(list(_en_lorem.Provider.word_list) + _EN_NOUNS + _EN_ADJS
                                + [w for v in _EN_VERBS for w in v]))
_FR_WORDS = tuple(dict.fromkeys(list(_fr_lorem.Provider.word_list) + _FR_NOUNS_M + _FR_NOUNS_F
                                + [w for a in _FR_ADJS for w in a] + [w for v in _FR_VERBS for w in v]))


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _past_simple(base: str, participle: str) -> str:
    return _IRREGULAR_PAST.get(base, participle)


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
        # en_GB puts 'Flat 3' on a line of its own.
        return ", ".join(s.strip() for s in self.fake.street_address().split("\n") if s.strip())

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
        """A sentence of prose: composed from a grammar over large word lists, shuffled common words,
        words mixed with codes and numbers, a line of codes and IDs, or (rarely) a stock letter phrase."""
        r = self.rng.random()
        if r < 0.08:
            return self._fill(self.pick(_LETTER[self.lang]))
        if r < 0.45:
            return self._composed()
        if r < 0.65:
            return self._random_words()
        if r < 0.85:
            return self._mixed()
        return self.codes()

    def code(self) -> str:
        """A random code or ID: letters of either case, digits, separators ('Xk7-0042/B', 'SN 4F2K#99')."""
        kind = int(self.rng.integers(6))
        if kind == 0:  # groups of capitals and digits: 'AB-4471-X2'
            groups = [self._chars(_UPPER + _DIGITS, int(self.rng.integers(2, 6)))
                      for _ in range(int(self.rng.integers(1, 4)))]
            return self.pick(["-", "/", ".", " ", "", "_", ":"]).join(groups)
        if kind == 1:  # mixed case, as in passwords and tracking IDs: 'aB3kLm9q'
            return self._chars(_UPPER + _LOWER + _DIGITS, int(self.rng.integers(4, 13)))
        if kind == 2:  # a prefix and a number: 'SN#00471', 'Dos. 2231-b'
            prefix = self._chars(_UPPER, int(self.rng.integers(1, 4)))
            if self.rng.random() < 0.4:
                prefix = prefix[0] + prefix[1:].lower()
            return (prefix + self.pick(["", "-", "#", ". ", ":", " ", "/"])
                    + str(int(self.rng.integers(0, 10 ** int(self.rng.integers(1, 8)))))
                    + (self.pick(["", "", "-" + self.pick(list(_LOWER + _UPPER)), "/" + self.pick(list(_DIGITS))])))
        if kind == 3:  # anything codes are made of, punctuation included
            pool = _UPPER + _LOWER + _DIGITS * 2 + CODE_PUNCT
            text = self._chars(pool, int(self.rng.integers(3, 11)))
            return text.strip() or "0"
        if kind == 4:  # a number: integer, decimal, percentage, fraction
            value = float(np.exp(self.rng.uniform(0, np.log(1e6))))
            return self.pick([str(int(value)), f"{value:.2f}", f"{value:.1f}".replace(".", ","),
                              f"{int(value) % 100} %", f"{int(value) % 100}%",
                              f"{int(self.rng.integers(1, 20))}/{int(self.rng.integers(1, 50))}",
                              f"+{int(value)}", f"-{value:.2f}", f"{int(value):,}".replace(",", self.pick([",", " ", "."]))])
        return self.pick([self.ref, self.postcode, self.phone, self.email, self.date, self.time, self.amount])()

    def codes(self) -> str:
        """A line of codes, IDs, numbers and the odd word, as on labels, forms and tables."""
        out = []
        for _ in range(int(self.rng.integers(2, 8))):
            r = self.rng.random()
            out.append(self.code() if r < 0.75 else self._word() if r < 0.9 else self.pick(list(CODE_PUNCT[:8])))
        return " ".join(out)

    def _chars(self, pool: str, n: int) -> str:
        return "".join(pool[i] for i in self.rng.integers(len(pool), size=n))

    def _word(self) -> str:
        """A common word of the language, now and then capitalised or in capitals."""
        lists = (_FR_WORDS if self.lang == "fr" else _EN_WORDS)
        w = lists[int(self.rng.integers(len(lists)))]
        r = self.rng.random()
        return w.upper() if r < 0.05 else w[:1].upper() + w[1:] if r < 0.2 else w

    def _random_words(self) -> str:
        """Common words in random order: a sentence no language model can complete."""
        words = [self._word() for _ in range(int(self.rng.integers(3, 15)))]
        for i in range(1, len(words) - 1):
            if self.rng.random() < 0.08:
                words[i] += self.pick([",", ",", ";", ":"])
        words[0] = words[0][:1].upper() + words[0][1:]
        return " ".join(words) + self.pick([".", ".", ".", "!", "?", "", "...", ";"])

    def _mixed(self) -> str:
        """Words interleaved with names, places, numbers and codes."""
        out = []
        for _ in range(int(self.rng.integers(3, 12))):
            r = self.rng.random()
            if r < 0.55:
                out.append(self._word())
            elif r < 0.8:
                out.append(self.code())
            else:
                out.append(self.pick([self.first_name, self.last_name, self.city, self.company])())
        return " ".join(out) + self.pick([".", "", "", ";", ":", ")"])

    def _slots(self, text: str) -> str:
        """``text`` with its {slots} filled (each slot drawn only if used)."""
        if "{" not in text:
            return text
        makers = {"date": self.date, "amount": self.amount, "ref": self.ref, "city": self.city,
                  "name": self.name, "first": self.first_name, "company": self.company, "time": self.time,
                  "n": lambda: str(int(self.rng.integers(2, 60))), "street": self.street, "email": self.email,
                  "noun": self._noun, "adj": lambda: self.pick(_EN_ADJS), "det_noun": self._fr_np,
                  "code": self.code}
        for key, make in makers.items():
            while "{" + key + "}" in text:
                text = text.replace("{" + key + "}", make(), 1)
        return text

    def _noun(self) -> str:
        return self.pick(_EN_NOUNS if self.lang == "en" else _FR_NOUNS_M + _FR_NOUNS_F)

    def _en_np(self) -> str:
        """An English noun phrase: 'the revised contract', '12 parcels', 'your monthly statement'."""
        r = self.rng.random()
        noun = self.pick(_EN_NOUNS)
        if r < 0.15:
            return f"{int(self.rng.integers(2, 100))} {_plural(noun)}"
        det = self.pick(_EN_DETS)
        adj = self.pick(_EN_ADJS) + " " if self.rng.random() < 0.5 else ""
        if det == "a" and (adj or noun)[0] in "aeiou":
            det = "an"
        tail = f" of {self.pick(['the', 'your', 'our'])} {self.pick(_EN_NOUNS)}" if self.rng.random() < 0.15 else ""
        return f"{det} {adj}{noun}{tail}"

    def _fr_np(self) -> str:
        """A French noun phrase with agreement: 'la facture impayée', 'votre contrat annuel', '12 colis'."""
        fem = self.rng.random() < 0.5
        noun = self.pick(_FR_NOUNS_F if fem else _FR_NOUNS_M)
        if self.rng.random() < 0.12:
            return f"{int(self.rng.integers(2, 100))} {noun if noun[-1] in 'sxz' else noun + 's'}"
        det = self.pick(["le", "le", "un", "votre", "notre", "ce", "chaque", "leur"])
        if fem:
            det = {"le": "la", "un": "une", "ce": "cette"}.get(det, det)
        elif det == "ce" and noun[0] in _FR_VOWELS:
            det = "cet"
        if det in ("le", "la") and noun[0] in _FR_VOWELS:
            phrase = "l'" + noun
        else:
            phrase = f"{det} {noun}"
        if self.rng.random() < 0.5:
            phrase += " " + self.pick(_FR_ADJS)[1 if fem else 0]
        return phrase

    def _composed(self) -> str:
        """A sentence from a small grammar: [opener] subject verb object [complement]."""
        if self.lang == "fr":
            return self._composed_fr()
        subject, plural = _EN_SUBJECTS[int(self.rng.integers(len(_EN_SUBJECTS)))]
        if self.rng.random() < 0.15:
            subject, plural = self.pick([self.first_name, self.company])(), False
        base, past = _EN_VERBS[int(self.rng.integers(len(_EN_VERBS)))]
        form = int(self.rng.integers(5))
        adverb = self.pick(_EN_ADVERBS) + " " if self.rng.random() < 0.2 else ""
        if form == 0:
            verb = f"{self.pick(_EN_MODALS)} {adverb}{base}"
        elif form == 1:
            verb = f"{'have' if plural else 'has'} {adverb}{past}"
        elif form == 2:
            verb = f"{adverb}{_past_simple(base, past)}"
        elif form == 3:
            subject, verb = self.pick(["Please", "Could you", "Remember to", "Do not forget to", "Kindly"]), base
        else:
            verb = f"{'are' if plural else 'is'} going to {base}" if subject != "I" else f"am going to {base}"
        parts = [subject, verb, self._en_np()]
        for _ in range(int(self.rng.choice([0, 1, 1, 1, 2]))):
            parts.append(self._slots(self.pick(_EN_PLACES)))
        text = " ".join(parts)
        if self.rng.random() < 0.3:
            proper = text.startswith("I ") or subject not in _EN_SUBJECT_NAMES
            text = f"{self._slots(self.pick(_EN_OPENERS))} {text if proper else text[:1].lower() + text[1:]}"
        end = "?" if subject == "Could you" else self.pick([".", ".", ".", ".", "!", ";"])
        return text[:1].upper() + text[1:] + end

    def _composed_fr(self) -> str:
        subject, aller, devoir, pouvoir, avoir = _FR_SUBJECTS[int(self.rng.integers(len(_FR_SUBJECTS)))]
        proper = subject == "{first}"
        subject = self._slots(subject)
        inf, pp = _FR_VERBS[int(self.rng.integers(len(_FR_VERBS)))]
        form = int(self.rng.integers(5))
        negative = self.rng.random() < 0.15
        adverb = " " + self.pick(_FR_ADVERBS) if self.rng.random() < 0.2 else ""
        if form <= 2:
            aux = (aller, devoir, pouvoir)[form]
            verb_pp = inf
        elif form == 3:
            aux, verb_pp = avoir, pp
        else:
            subject, aux, verb_pp, negative = self.pick(["Merci de", "Il faut", "Pourriez-vous", "Il faudra",
                                                         "Veuillez", "Nous vous demandons de"]), "", inf, False
        if negative:
            ne = "n'" if aux[0] in _FR_VOWELS else "ne "
            verb = f"{ne}{aux} pas{adverb} {verb_pp}"
        else:
            verb = f"{aux}{adverb} {verb_pp}".strip()
        text = f"J'{verb}" if subject == "Je" and verb[0] in _FR_VOWELS else f"{subject} {verb}"
        text += " " + self._fr_np()
        for _ in range(int(self.rng.choice([0, 1, 1, 1, 2]))):
            text += " " + self._slots(self.pick(_FR_PLACES))
        if self.rng.random() < 0.3 and not text.startswith("Pourriez"):
            text = f"{self._slots(self.pick(_FR_OPENERS))} {text if proper else text[:1].lower() + text[1:]}"
        end = " ?" if "Pourriez-vous" in text else self.pick([".", ".", ".", ".", " !", " ;"])
        return text[:1].upper() + text[1:] + end

    def note(self) -> str:
        """A short to-do or memo line: a stock note, an instruction composed from the grammar, or codes."""
        r = self.rng.random()
        if r < 0.15:
            return self._fill(self.pick(_NOTES[self.lang]))
        if r < 0.3:
            return self._mixed().rstrip(".;:)")
        if r < 0.4:
            return self.codes()
        if self.lang == "fr":
            text = f"{self.pick(_FR_VERBS)[0]} {self._fr_np()}"
            places = _FR_PLACES
        else:
            text = f"{self.pick(_EN_VERBS)[0]} {self._en_np()}"
            places = _EN_PLACES
        if self.rng.random() < 0.6:
            text += " " + self._slots(self.pick(places))
        if self.rng.random() < 0.2:
            text = text[:1].upper() + text[1:]
        return text + self.pick(["", "", "", " !", "?", " - " + self.code(), " (" + self.code() + ")"])

    def item(self) -> str:
        """An invoice line item: a stock item, or product words with a specification or code."""
        if self.rng.random() < 0.15:
            return self.pick(_ITEMS[self.lang])
        nouns = _FR_ITEM_NOUNS if self.lang == "fr" else _EN_ITEM_NOUNS
        words = [self.pick(nouns)]
        if self.rng.random() < 0.5:
            words.append(self.pick(_FR_ADJS)[0] if self.lang == "fr" else self.pick(_EN_ADJS))
            if self.lang == "en":
                words.reverse()
        if self.rng.random() < 0.3:
            words.append(self.pick(nouns))
        for _ in range(int(self.rng.choice([0, 1, 1, 2]))):
            words.append(self._item_spec())
        text = " ".join(words)
        return text.upper() if self.rng.random() < 0.1 else text[:1].upper() + text[1:]

    def _item_spec(self) -> str:
        spec = self.pick(_ITEM_SPECS)
        for key, make in (("{n}", lambda: str(int(self.rng.integers(1, 500)))),
                          ("{m}", lambda: str(int(self.rng.integers(1, 100)))), ("{code}", self.code),
                          ("{q}", lambda: str(int(self.rng.integers(1, 5)))),
                          ("{month}", lambda: self.pick(_MONTHS[self.lang])),
                          ("{year}", lambda: str(int(self.rng.integers(1990, 2031))))):
            while key in spec:
                spec = spec.replace(key, make(), 1)
        return spec

    def title(self) -> str:
        """A report or section title: a few capitalised words, a noun phrase, numbered or with a code."""
        r = self.rng.random()
        if r < 0.35:
            return self.words.sentence(nb_words=int(self.rng.integers(2, 6))).rstrip(".")
        if r < 0.55:
            text = " ".join(self._word() for _ in range(int(self.rng.integers(1, 6))))
        else:
            text = self._fr_np() if self.lang == "fr" else self._en_np()
            if self.rng.random() < 0.4:
                text += " " + self._slots(self.pick(_FR_PLACES if self.lang == "fr" else _EN_PLACES))
        text = text[:1].upper() + text[1:]
        r = self.rng.random()
        if r < 0.2:
            text = f"{int(self.rng.integers(1, 20))}.{int(self.rng.integers(1, 10))} {text}"
        elif r < 0.3:
            text = f"{text} - {self.code()}"
        elif r < 0.4:
            text = text.upper()
        return text

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
