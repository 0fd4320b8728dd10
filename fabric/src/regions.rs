//! Built-in table of public cloud regions with their country and jurisdiction.
//!
//! The provider derives a GPU pool's `jurisdiction` from its `region` with this table, and the
//! `gpucap_regions` data source serves it; the fabric re-checks every config it is given against
//! it. Only regions we are sure exist are listed; an unknown
//! region is an error (with a suggestion), never a guess. On-prem sites are deliberately absent:
//! there is no way to know where "this host" is, so they must state their jurisdiction explicitly.

use strsim::levenshtein;

/// One cloud region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// The provider's own region name, e.g. `eu-central-1`, `europe-west3`, `westeurope`.
    pub name: &'static str,
    /// The cloud: `"aws"`, `"gcp"` or `"azure"`.
    pub provider: &'static str,
    /// Human-readable location (city, metro or area as the provider documents it).
    pub location: &'static str,
    /// ISO 3166-1 alpha-2 country code, e.g. `"DE"`, `"US"`. The United Kingdom is `"GB"`.
    pub country: &'static str,
    /// The legal regime that matters for data residency.
    ///
    /// `"EU"` for EU member states and also for the EEA members Norway, Iceland and Liechtenstein,
    /// because the GDPR applies there just the same. `"UK"` for the United Kingdom (UK GDPR, a
    /// separate regime since Brexit). Every other country uses its own country code, e.g. `"CH"`,
    /// `"US"`, `"JP"`.
    pub jurisdiction: &'static str,
}

const fn aws(
    name: &'static str,
    location: &'static str,
    country: &'static str,
    jurisdiction: &'static str,
) -> Region {
    Region {
        name,
        provider: "aws",
        location,
        country,
        jurisdiction,
    }
}

const fn gcp(
    name: &'static str,
    location: &'static str,
    country: &'static str,
    jurisdiction: &'static str,
) -> Region {
    Region {
        name,
        provider: "gcp",
        location,
        country,
        jurisdiction,
    }
}

const fn azure(
    name: &'static str,
    location: &'static str,
    country: &'static str,
    jurisdiction: &'static str,
) -> Region {
    Region {
        name,
        provider: "azure",
        location,
        country,
        jurisdiction,
    }
}

/// Every known region, grouped by cloud.
///
/// Names are unique across clouds: AWS uses `area-direction-N`, Google `area-directionN` and Azure
/// dashless words, so they do not collide. Government clouds (AWS GovCloud, Azure Government),
/// the AWS European Sovereign Cloud and Azure China are separate partitions and are not listed;
/// the two AWS China regions are, since they share the ordinary region naming.
pub static REGIONS: &[Region] = &[
    // --- AWS ---
    aws("us-east-1", "N. Virginia", "US", "US"),
    aws("us-east-2", "Ohio", "US", "US"),
    aws("us-west-1", "N. California", "US", "US"),
    aws("us-west-2", "Oregon", "US", "US"),
    aws("ca-central-1", "Montréal", "CA", "CA"),
    aws("ca-west-1", "Calgary", "CA", "CA"),
    aws("mx-central-1", "Querétaro", "MX", "MX"),
    aws("sa-east-1", "São Paulo", "BR", "BR"),
    aws("eu-central-1", "Frankfurt", "DE", "EU"),
    aws("eu-central-2", "Zurich", "CH", "CH"),
    aws("eu-west-1", "Ireland", "IE", "EU"),
    aws("eu-west-2", "London", "GB", "UK"),
    aws("eu-west-3", "Paris", "FR", "EU"),
    aws("eu-south-1", "Milan", "IT", "EU"),
    aws("eu-south-2", "Aragón", "ES", "EU"),
    aws("eu-north-1", "Stockholm", "SE", "EU"),
    aws("af-south-1", "Cape Town", "ZA", "ZA"),
    aws("il-central-1", "Tel Aviv", "IL", "IL"),
    aws("me-south-1", "Bahrain", "BH", "BH"),
    aws("me-central-1", "UAE", "AE", "AE"),
    aws("ap-east-1", "Hong Kong", "HK", "HK"),
    aws("ap-east-2", "Taipei", "TW", "TW"),
    aws("ap-south-1", "Mumbai", "IN", "IN"),
    aws("ap-south-2", "Hyderabad", "IN", "IN"),
    aws("ap-southeast-1", "Singapore", "SG", "SG"),
    aws("ap-southeast-2", "Sydney", "AU", "AU"),
    aws("ap-southeast-3", "Jakarta", "ID", "ID"),
    aws("ap-southeast-4", "Melbourne", "AU", "AU"),
    aws("ap-southeast-5", "Malaysia", "MY", "MY"),
    aws("ap-southeast-6", "New Zealand", "NZ", "NZ"),
    aws("ap-southeast-7", "Thailand", "TH", "TH"),
    aws("ap-northeast-1", "Tokyo", "JP", "JP"),
    aws("ap-northeast-2", "Seoul", "KR", "KR"),
    aws("ap-northeast-3", "Osaka", "JP", "JP"),
    // Separate aws-cn partition, operated by local partners (Sinnet, NWCD).
    aws("cn-north-1", "Beijing", "CN", "CN"),
    aws("cn-northwest-1", "Ningxia", "CN", "CN"),
    // --- Google Cloud ---
    gcp("us-central1", "Council Bluffs, Iowa", "US", "US"),
    gcp("us-east1", "Moncks Corner, South Carolina", "US", "US"),
    gcp("us-east4", "Ashburn, Virginia", "US", "US"),
    gcp("us-east5", "Columbus, Ohio", "US", "US"),
    gcp("us-south1", "Dallas, Texas", "US", "US"),
    gcp("us-west1", "The Dalles, Oregon", "US", "US"),
    gcp("us-west2", "Los Angeles, California", "US", "US"),
    gcp("us-west3", "Salt Lake City, Utah", "US", "US"),
    gcp("us-west4", "Las Vegas, Nevada", "US", "US"),
    gcp("northamerica-northeast1", "Montréal", "CA", "CA"),
    gcp("northamerica-northeast2", "Toronto", "CA", "CA"),
    gcp("northamerica-south1", "Querétaro", "MX", "MX"),
    gcp("southamerica-east1", "Osasco, São Paulo", "BR", "BR"),
    gcp("southamerica-west1", "Santiago", "CL", "CL"),
    gcp("europe-west1", "St. Ghislain", "BE", "EU"),
    gcp("europe-west2", "London", "GB", "UK"),
    gcp("europe-west3", "Frankfurt", "DE", "EU"),
    gcp("europe-west4", "Eemshaven", "NL", "EU"),
    gcp("europe-west6", "Zurich", "CH", "CH"),
    gcp("europe-west8", "Milan", "IT", "EU"),
    gcp("europe-west9", "Paris", "FR", "EU"),
    gcp("europe-west10", "Berlin", "DE", "EU"),
    gcp("europe-west12", "Turin", "IT", "EU"),
    gcp("europe-central2", "Warsaw", "PL", "EU"),
    gcp("europe-north1", "Hamina", "FI", "EU"),
    gcp("europe-north2", "Stockholm", "SE", "EU"),
    gcp("europe-southwest1", "Madrid", "ES", "EU"),
    gcp("me-central1", "Doha", "QA", "QA"),
    gcp("me-central2", "Dammam", "SA", "SA"),
    gcp("me-west1", "Tel Aviv", "IL", "IL"),
    gcp("africa-south1", "Johannesburg", "ZA", "ZA"),
    gcp("asia-east1", "Changhua County", "TW", "TW"),
    gcp("asia-east2", "Hong Kong", "HK", "HK"),
    gcp("asia-northeast1", "Tokyo", "JP", "JP"),
    gcp("asia-northeast2", "Osaka", "JP", "JP"),
    gcp("asia-northeast3", "Seoul", "KR", "KR"),
    gcp("asia-south1", "Mumbai", "IN", "IN"),
    gcp("asia-south2", "Delhi", "IN", "IN"),
    gcp("asia-southeast1", "Jurong West", "SG", "SG"),
    gcp("asia-southeast2", "Jakarta", "ID", "ID"),
    gcp("australia-southeast1", "Sydney", "AU", "AU"),
    gcp("australia-southeast2", "Melbourne", "AU", "AU"),
    // --- Azure ---
    azure("eastus", "Virginia", "US", "US"),
    azure("eastus2", "Virginia", "US", "US"),
    azure("centralus", "Iowa", "US", "US"),
    azure("northcentralus", "Illinois", "US", "US"),
    azure("southcentralus", "Texas", "US", "US"),
    azure("westcentralus", "Wyoming", "US", "US"),
    azure("westus", "California", "US", "US"),
    azure("westus2", "Washington", "US", "US"),
    azure("westus3", "Phoenix", "US", "US"),
    azure("canadacentral", "Toronto", "CA", "CA"),
    azure("canadaeast", "Quebec City", "CA", "CA"),
    azure("mexicocentral", "Querétaro", "MX", "MX"),
    azure("brazilsouth", "São Paulo State", "BR", "BR"),
    azure("brazilsoutheast", "Rio de Janeiro", "BR", "BR"),
    azure("chilecentral", "Santiago", "CL", "CL"),
    azure("northeurope", "Ireland", "IE", "EU"),
    azure("westeurope", "Netherlands", "NL", "EU"),
    azure("francecentral", "Paris", "FR", "EU"),
    azure("francesouth", "Marseille", "FR", "EU"),
    azure("germanywestcentral", "Frankfurt", "DE", "EU"),
    azure("germanynorth", "Berlin", "DE", "EU"),
    azure("italynorth", "Milan", "IT", "EU"),
    azure("spaincentral", "Madrid", "ES", "EU"),
    azure("polandcentral", "Warsaw", "PL", "EU"),
    azure("swedencentral", "Gävle", "SE", "EU"),
    azure("swedensouth", "Malmö", "SE", "EU"),
    // Norway is EEA, not EU, but the GDPR applies.
    azure("norwayeast", "Oslo", "NO", "EU"),
    azure("norwaywest", "Stavanger", "NO", "EU"),
    azure("switzerlandnorth", "Zurich", "CH", "CH"),
    azure("switzerlandwest", "Geneva", "CH", "CH"),
    azure("uksouth", "London", "GB", "UK"),
    azure("ukwest", "Cardiff", "GB", "UK"),
    azure("uaenorth", "Dubai", "AE", "AE"),
    azure("uaecentral", "Abu Dhabi", "AE", "AE"),
    azure("qatarcentral", "Doha", "QA", "QA"),
    azure("israelcentral", "Israel", "IL", "IL"),
    azure("southafricanorth", "Johannesburg", "ZA", "ZA"),
    azure("southafricawest", "Cape Town", "ZA", "ZA"),
    azure("centralindia", "Pune", "IN", "IN"),
    azure("southindia", "Chennai", "IN", "IN"),
    azure("westindia", "Mumbai", "IN", "IN"),
    azure("jioindiacentral", "Nagpur", "IN", "IN"),
    azure("jioindiawest", "Jamnagar", "IN", "IN"),
    azure("eastasia", "Hong Kong", "HK", "HK"),
    azure("southeastasia", "Singapore", "SG", "SG"),
    azure("indonesiacentral", "Jakarta", "ID", "ID"),
    azure("malaysiawest", "Kuala Lumpur", "MY", "MY"),
    azure("japaneast", "Tokyo, Saitama", "JP", "JP"),
    azure("japanwest", "Osaka", "JP", "JP"),
    azure("koreacentral", "Seoul", "KR", "KR"),
    azure("koreasouth", "Busan", "KR", "KR"),
    azure("australiaeast", "New South Wales", "AU", "AU"),
    azure("australiasoutheast", "Victoria", "AU", "AU"),
    azure("australiacentral", "Canberra", "AU", "AU"),
    azure("australiacentral2", "Canberra", "AU", "AU"),
    azure("newzealandnorth", "Auckland", "NZ", "NZ"),
];

/// Looks a region up by its exact (case-sensitive) name.
///
/// Cloud APIs treat region names case-sensitively, so `EU-CENTRAL-1` is not accepted here either.
pub fn lookup(region: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.name == region)
}

/// All jurisdictions that appear in the table, sorted and without duplicates.
pub fn jurisdictions() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = REGIONS.iter().map(|r| r.jurisdiction).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Largest edit distance at which [`suggest`] still offers a name; beyond it a "did you mean" is
/// more confusing than helpful.
const MAX_SUGGEST_DISTANCE: usize = 3;

/// The known region name closest to `region`, for "did you mean" hints in error messages.
///
/// Returns `None` when nothing is within three edits. Ties go to the earlier row of [`REGIONS`].
pub fn suggest(region: &str) -> Option<&'static str> {
    REGIONS
        .iter()
        .map(|r| (levenshtein(region, r.name), r.name))
        .filter(|&(d, _)| d <= MAX_SUGGEST_DISTANCE)
        // `min_by_key` keeps the first of equal minima, hence table order on ties.
        .min_by_key(|&(d, _)| d)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// EU member states plus the EEA members (NO, IS, LI), which all map to jurisdiction "EU".
    const EU_EEA: &[&str] = &[
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE",
        "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "IS", "LI", "NO",
    ];

    fn check(name: &str, provider: &str, country: &str, jurisdiction: &str) {
        let r = lookup(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(r.provider, provider, "{name}");
        assert_eq!(r.country, country, "{name}");
        assert_eq!(r.jurisdiction, jurisdiction, "{name}");
    }

    #[test]
    fn aws_lookups() {
        check("us-east-1", "aws", "US", "US");
        check("eu-central-1", "aws", "DE", "EU");
        check("eu-west-2", "aws", "GB", "UK");
        check("eu-central-2", "aws", "CH", "CH");
        check("me-central-1", "aws", "AE", "AE");
        check("il-central-1", "aws", "IL", "IL");
        check("ca-west-1", "aws", "CA", "CA");
        check("mx-central-1", "aws", "MX", "MX");
        check("ap-southeast-5", "aws", "MY", "MY");
        check("ap-southeast-7", "aws", "TH", "TH");
    }

    #[test]
    fn gcp_lookups() {
        check("europe-west1", "gcp", "BE", "EU");
        check("europe-west3", "gcp", "DE", "EU");
        check("europe-west6", "gcp", "CH", "CH");
        check("us-central1", "gcp", "US", "US");
        check("asia-northeast1", "gcp", "JP", "JP");
        check("me-central2", "gcp", "SA", "SA");
    }

    #[test]
    fn azure_lookups() {
        check("westeurope", "azure", "NL", "EU");
        check("northeurope", "azure", "IE", "EU");
        check("germanywestcentral", "azure", "DE", "EU");
        check("switzerlandnorth", "azure", "CH", "CH");
        check("uksouth", "azure", "GB", "UK");
        check("eastus", "azure", "US", "US");
        check("norwayeast", "azure", "NO", "EU");
    }

    #[test]
    fn lookup_is_exact() {
        assert!(lookup("EU-CENTRAL-1").is_none());
        assert!(lookup("eu-central-1 ").is_none());
        assert!(lookup("local").is_none());
        assert!(lookup("").is_none());
    }

    #[test]
    fn names_are_unique() {
        let mut seen = HashSet::new();
        for r in REGIONS {
            assert!(seen.insert(r.name), "duplicate region {}", r.name);
        }
    }

    #[test]
    fn countries_are_alpha2() {
        for r in REGIONS {
            assert!(
                r.country.len() == 2 && r.country.bytes().all(|b| b.is_ascii_uppercase()),
                "{}: bad country {:?}",
                r.name,
                r.country
            );
        }
    }

    #[test]
    fn jurisdictions_are_consistent() {
        for r in REGIONS {
            assert!(!r.jurisdiction.is_empty(), "{}: empty jurisdiction", r.name);
            assert!(!r.location.is_empty(), "{}: empty location", r.name);
            assert!(matches!(r.provider, "aws" | "gcp" | "azure"), "{}", r.name);
            let expected = if EU_EEA.contains(&r.country) {
                "EU"
            } else if r.country == "GB" {
                "UK"
            } else {
                r.country
            };
            assert_eq!(r.jurisdiction, expected, "{}", r.name);
        }
    }

    #[test]
    fn jurisdictions_sorted_and_deduplicated() {
        let js = jurisdictions();
        assert!(js.windows(2).all(|w| w[0] < w[1]));
        for j in ["EU", "UK", "CH", "US", "JP"] {
            assert!(js.contains(&j), "{j}");
        }
    }

    #[test]
    fn suggest_typo() {
        assert_eq!(suggest("eu-centrl-1"), Some("eu-central-1"));
        assert_eq!(suggest("westeurop"), Some("westeurope"));
        assert_eq!(suggest("europe-west-3"), Some("europe-west3"));
        assert_eq!(suggest("us-east-1"), Some("us-east-1"));
    }

    #[test]
    fn suggest_garbage() {
        assert_eq!(suggest("definitely-not-a-region"), None);
        assert_eq!(suggest("zzzzzzzz"), None);
    }
}
